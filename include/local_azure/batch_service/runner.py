"""Running one task's command line as a local process, the way the Batch agent does.

No shell: the command line is split like a POSIX shell would (shlex) and
executed directly; users who need a shell write `/bin/bash -c '...'`. Each
process gets its own session so it (and its children) can be killed as one.
Only a small allow-list of the service's environment is inherited (PATH so
`python` is the venv's, locale, YOLO/thread settings), never its secrets.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

INHERITED_EXACT = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SHELL"}
INHERITED_PREFIXES = ("LC_", "YOLO_", "OMP_", "MKL_", "OPENBLAS_", "TORCH_")


def inherited_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in INHERITED_EXACT or k.startswith(INHERITED_PREFIXES)}


def task_environment(batch_vars: dict[str, str], *settings: list[dict] | None) -> dict[str, str]:
    """Inherited basics + AZ_BATCH_* + each list of environmentSettings (later lists win)."""
    env = inherited_environment()
    env.update(batch_vars)
    for pairs in settings:
        for pair in pairs or []:
            env[pair["name"]] = pair.get("value") or ""
    return env


def split_command_line(command_line: str) -> list[str]:
    """argv for a command line; ValueError when quotes do not balance."""
    argv = shlex.split(command_line)
    if not argv:
        raise ValueError("the command line is empty")
    return argv


def spawn(argv: list[str], cwd: Path, env: dict[str, str], stdout_path: Path, stderr_path: Path) -> subprocess.Popen:
    """Start argv in cwd, writing stdout.txt / stderr.txt; FileNotFoundError when the program is missing."""
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )


def exit_code_of(returncode: int) -> int:
    """A POSIX shell's view of a process killed by a signal: 128 + signal number."""
    return returncode if returncode >= 0 else 128 - returncode


def kill(proc: subprocess.Popen) -> None:
    """Kill the task's whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_leftover(pid: int, markers: list[str]) -> bool:
    """Kill a task process left by a previous run of the service, only if its environment proves it is ours."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    if not all(marker.encode() in environ for marker in markers):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
