"""Running one task's command line as a local process, the way the Batch agent does.

No shell: the command line is split like a POSIX shell would (shlex) and
executed directly; users who need a shell write `/bin/bash -c '...'`. Each
process gets its own session so it (and its children) can be killed as one.
Nothing of the service's own environment reaches a task: like a process the
Batch agent starts, it sees the node image's system PATH, its user's HOME, the
AZ_BATCH_* variables and the job's and task's environment settings; in a
container, the image's environment instead of the node's PATH.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

#: The system PATH of the node image (Ubuntu's /etc/environment without games and snap).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def task_environment(base: dict[str, str], batch_vars: dict[str, str], *settings: list[dict] | None) -> dict[str, str]:
    """The node's (or image's) base variables + AZ_BATCH_* + each list of environmentSettings (later lists win)."""
    env = dict(base)
    env.update(batch_vars)
    for pairs in settings:
        for pair in pairs or []:
            env[pair["name"]] = pair.get("value") or ""
    return env


def container_run_options(options: str | None) -> tuple[str | None, dict[str, str]]:
    """(--workdir, -e variables) of a task's containerRunOptions; other docker create options have no local effect."""
    workdir, env = None, {}
    words = shlex.split(options or "")
    i = 0
    while i < len(words):
        word = words[i]
        value = None
        for flag in ("--workdir", "-w", "--env", "-e"):
            if word == flag and i + 1 < len(words):
                value, i = words[i + 1], i + 1
                break
            if word.startswith(flag + "="):
                value = word[len(flag) + 1:]
                break
        else:
            flag = None
        if flag in ("--workdir", "-w"):
            workdir = value
        elif flag in ("--env", "-e") and value and "=" in value:
            name, _, val = value.partition("=")
            env[name] = val
        i += 1
    return workdir, env


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
