"""Start, find and stop the local stack's background processes.

Every service of the local stack (Azurite, the Batch service, the Azure ML
endpoint) is a child process that listens on 127.0.0.1. A pid file under the
state folder records which process we started, so `stop` only ever stops what
`start` started.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class ServiceProcess:
    """A background service started by us, remembered by a pid file."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid we started, if that process is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self, argv: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.Popen:
        """Start argv in its own session, logging to the state folder, and wait for its port."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(str(proc.pid))
        try:
            wait_for_port(port, timeout=timeout, proc=proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log_file}") from None
        return proc

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the process group we started (children included); True when something was stopped.

        SIGTERM first; whatever of the group is still alive after ``timeout`` gets SIGKILL,
        so a service's children (e.g. the scheduler and triggerer of ``airflow standalone``)
        never outlive it.
        """
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # reap the leader when it is our own child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True
