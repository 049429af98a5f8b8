"""Running a task, start task, job preparation or release task as a local process, and its outcome.

The environment a process sees (AZ_BATCH_* variables, its user's HOME), its container image,
resource files, then the process itself (task_process.py), killed when its node goes away,
its task is stopped, or its wall clock runs out.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

from local_stack.batch_service import blobfiles, registry, task_process
from local_stack.batch_service.account_state import AccountState, ProcessKey, RunningProcess


class ProcessExecution(AccountState):
    """The processes of tasks and node tasks: their environment, their run, their exit code or failure."""

    def _batch_vars(self, pool_id: str, node_id: str, dedicated: bool) -> dict[str, str]:
        node_dir = self._node_dir(pool_id, node_id)
        return {
            "AZ_BATCH_ACCOUNT_NAME": self.config.account,
            "AZ_BATCH_ACCOUNT_URL": self.config.base_url,
            "AZ_BATCH_POOL_ID": pool_id,
            "AZ_BATCH_NODE_ID": node_id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": str(node_dir),
            "AZ_BATCH_NODE_SHARED_DIR": str(node_dir / "shared"),
            "AZ_BATCH_NODE_STARTUP_DIR": str(node_dir / "startup"),
            "AZ_BATCH_NODE_MOUNTS_DIR": str(node_dir / "fsmounts"),
        }

    def _home(self, pool_id: str, node_id: str, identity: dict | None, task_key: str) -> dict[str, str]:
        """HOME of the user a task runs as: one per pool-scope auto-user or named user, else one per task.

        Processes still run as the service's OS user (see the README): the identity
        decides which home, and so which user files, a task shares with others.
        """
        identity = identity or {}
        auto = identity.get("autoUser")
        if identity.get("username"):
            name = f"user-{identity['username']}"
        elif auto and (auto.get("scope") or "pool").lower() == "pool":
            name = f"autouser-pool-{(auto.get('elevationLevel') or 'nonadmin').lower()}"
        else:
            name = f"autouser-task-{task_key}"
        home = self._node_dir(pool_id, node_id) / "users" / name
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": task_process.SYSTEM_PATH, "HOME": str(home)}

    def _runtime(self, pool_id: str, settings: dict | None) -> dict:
        """What _execute needs to start the command in a container: its settings and the pool's registries."""
        pool = self.pools.get(pool_id) or {}
        container = (pool.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
        identities = [i.get("resourceId", "") for i in (pool.get("identity") or {}).get("userAssignedIdentities") or []]
        return {"settings": settings, "poolContainers": container is not None,
                "registries": (container or {}).get("containerRegistries"), "identities": identities}

    def _execute(self, key: ProcessKey, attempt: int, spec: dict, task_dir: Path, working_dir: Path,
                 env: dict[str, str], limit: float | None, runtime: dict | None = None) -> tuple[int | None, dict | None]:
        """Fetch resource files and run the command; (exit code, failureInfo), or (None, None) when killed by us."""
        working_dir.mkdir(parents=True, exist_ok=True)
        stdout, stderr = task_dir / "stdout.txt", task_dir / "stderr.txt"
        cwd = working_dir
        settings = (runtime or {}).get("settings")
        if settings:
            if not runtime.get("poolContainers"):
                stdout.touch()
                stderr.write_text("the task has containerSettings but its pool has no containerConfiguration\n")
                return None, {"category": "usererror", "code": "ContainerInvalidSettings",
                              "message": "At least one value of the specified Task container settings is invalid",
                              "details": [{"name": "Message", "value": "the pool has no containerConfiguration"}]}
            try:
                image = self.registry.pull(settings.get("imageName") or "", runtime.get("registries"),
                                           settings.get("registry"), runtime.get("identities"))
            except registry.PullError as err:
                stdout.touch()
                stderr.write_text(f"{err}: {err.details.get('Message', '')}\n")
                return None, err.failure_info()
            run_workdir, run_env = task_process.container_run_options(settings.get("containerRunOptions"))
            # In the container: the image's environment, then the task's variables (docker create -e).
            env = {**image.env, **{k: v for k, v in env.items() if k != "PATH"}, **run_env}
            env.setdefault("PATH", task_process.SYSTEM_PATH)
            if run_workdir:
                cwd = Path(run_workdir)
            elif (settings.get("workingDirectory") or "").lower() == "containerimagedefault" and image.workdir:
                cwd = Path(image.workdir)
        try:
            blobfiles.download_resource_files(spec.get("resourceFiles") or [], working_dir, self.config.storage_connection_string)
        except blobfiles.TransferError as err:
            stderr.write_text(f"{err}\n")
            stdout.touch()
            return None, {"category": "usererror", "code": err.code, "message": str(err)}
        forced = self.faults.take_task_exit(key[1], key[2]) if key[0] == "task" else None
        if forced is not None:
            stdout.write_bytes(b"")
            stderr.write_text(f"exit code {forced} injected by /_emulator/faults\n")
            return forced, None
        try:
            argv = task_process.split_command_line(spec["commandLine"])
            proc = task_process.spawn(argv, cwd, env, stdout, stderr)
        except ValueError as err:
            stderr.write_text(f"{err}\n")
            return None, {"category": "usererror", "code": "CommandLineInvalid", "message": f"The command line could not be parsed: {err}"}
        except OSError as err:
            stderr.write_text(f"{err}\n")
            return None, {"category": "usererror", "code": "CommandProgramNotFound", "message": f"The specified command program is not found: {err.strerror}"}
        with self.lock:
            if self._stop.is_set() or self._current_attempt(key) != attempt:
                task_process.kill(proc)
                proc.wait()
                return None, None
            self.procs[key] = RunningProcess(proc, attempt, time.monotonic(), limit)
            if key[0] == "task":
                task = self.tasks[key[1]][key[2]]
                task["_pid"] = proc.pid
                self.store.save_tasks(key[1], [task])
        returncode = proc.wait()
        if returncode == -signal.SIGTERM:
            # we only ever SIGKILL; a SIGTERM most likely hit the process while it was still in the
            # service's process group (between fork and setsid) as the service was being stopped
            self._stop.wait(2.0)
        with self.lock:
            running = self.procs.pop(key, None)
            if self._stop.is_set():
                return None, None  # stopping: the task stays running in the store and is requeued on start
        reason = running.kill_reason if running else None
        if reason == "wallclock":
            return task_process.exit_code_of(returncode), {
                "category": "usererror", "code": "TaskEnded",
                "message": "Task was ended by the Batch service because it exceeded its maxWallClockTime.",
                "details": [{"name": "Reason", "value": "MaxWallClockTimeExpiry"}],
            }
        if reason is not None:
            return None, None
        return task_process.exit_code_of(returncode), None

    def _current_attempt(self, key: ProcessKey) -> int | None:
        if key[0] == "task":
            task = self.tasks.get(key[1], {}).get(key[2])
            return task.get("_attempt") if task else None
        node = self.nodes.get(key[1], {}).get(key[2])
        return node.get("_boot") if node else None
