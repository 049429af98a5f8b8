"""The parallel run driver of the local Azure ML endpoint (one subprocess per job, the "runner").

It does what Azure ML's parallel run driver does on a cluster, on this machine:
downloads the code asset and the input folder from Azurite, starts
``instance_count x max_concurrency_per_instance`` worker processes that each import
the entry script and call ``init()`` once, hands them mini batches of
``mini_batch_size`` files for ``run()``, retries a failed or timed-out mini batch up to
``max_retries`` tries in all, and fails the job once more mini batches (or files) failed
than the thresholds allow, or when no mini batch succeeded at all.

The ``append_row`` output is written as the driver writes it: each worker process
appends what ``run()`` returned to its own temp file ``temp_<ip>_<pid>_<file name>``
(a DataFrame with ``to_csv(sep=" ", header=None, index=None, mode="a")``, a list as
one ``str(item)`` per line) *before* the mini batch is marked done, and the temp files
are concatenated into the one output file at the end. A worker that dies after
appending (a pre-empted node) gets its mini batch run again, so its rows appear twice:
the ``rerun_after_append`` fault (``PUT /_local/faults``) makes that happen on purpose.

Protocol with the service (stdout): ``STATUS <state>`` lines, and at most one
``ERROR <json string>`` line before a non-zero exit.
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2


def say(kind: str, value: str) -> None:
    print(f"{kind} {value}", flush=True)


def log(message: str) -> None:
    print(f"[runner {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- worker side --------------------------------------------------------------


def load_entry_script(code_dir: str, entry_script: str) -> Any:
    path = Path(code_dir) / entry_script
    if not path.is_file():
        raise FileNotFoundError(f"entry script {entry_script!r} is not in the code asset")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise AttributeError(f"entry script {entry_script!r} has no {name}() function")
    return module


def worker_main(worker_id: int, code_dir: str, entry_script: str, arguments: list[str],
                env: dict[str, str], tasks: mp.Queue, results: mp.Queue, output: dict[str, Any] | None) -> None:
    """One worker process: init() once, then run() for every mini batch it is handed.

    output (None without append_row): ``{"dir", "file_name", "ip", "die_after_append"}``.
    """
    os.environ.update(env)
    os.chdir(code_dir)
    sys.argv = [entry_script, *arguments]
    try:
        module = load_entry_script(code_dir, entry_script)
        module.init()
    except BaseException:
        results.put(("init_error", worker_id, None, traceback.format_exc()))
        return
    results.put(("ready", worker_id, None, None))
    while True:
        item = tasks.get()
        if item is None:
            return
        batch_id, files = item
        try:
            returned = module.run(list(files))
            count = append_to_temp_file(returned, output) if output else result_length(returned)
        except BaseException:
            results.put(("error", worker_id, batch_id, traceback.format_exc()))
            continue
        if output and output.get("die_after_append"):
            os._exit(137)  # the fault: rows appended, the mini batch never marked done (a pre-empted node)
        results.put(("done", worker_id, batch_id, count))


def temp_file_name(ip: str, pid: int, file_name: str) -> str:
    """The driver's per-process temp file: temp_<ip>_<pid>_<append_row_file_name>."""
    return f"temp_{ip}_{pid}_{file_name}"


def result_length(returned: Any) -> int:
    """What the driver accepts from run(): a list or a DataFrame (anything else fails the mini batch)."""
    import pandas as pd

    if not isinstance(returned, (list, pd.DataFrame)):
        raise TypeError(f"The type of return value is not a list or dataframe: {type(returned).__name__}")
    return len(returned)


def append_to_temp_file(returned: Any, output: dict[str, Any]) -> int:
    """Append run()'s result to this process's temp file, in the driver's format; returns its length."""
    import pandas as pd

    count = result_length(returned)
    folder = Path(output["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / temp_file_name(output["ip"], os.getpid(), output["file_name"])
    if isinstance(returned, list):
        with open(path, "a", encoding="utf-8") as handle:
            for item in returned:
                handle.write(f"{item}\n")
    else:
        returned.to_csv(path, sep=" ", header=None, index=None, mode="a")
    return count


def concatenate(folder: Path, file_name: str, target: Path) -> int:
    """Concatenate the per-process temp files into the one output file; returns how many there were.

    In which order the driver concatenates them is not documented; here: by file name.
    """
    suffix = f"_{file_name}"
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("temp_") and p.name.endswith(suffix)) \
        if folder.exists() else []
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
    return len(parts)


# --- coordinator side -----------------------------------------------------------


@dataclass
class Worker:
    process: mp.Process
    tasks: mp.Queue
    ready: bool = False
    batch: int | None = None
    started: float = 0.0


@dataclass
class Progress:
    tries: dict[int, int] = field(default_factory=dict)
    failed_batches: list[int] = field(default_factory=list)
    failed_items: int = 0
    done: int = 0
    last_error: dict[int, str] = field(default_factory=dict)


class JobFailed(Exception):
    pass


def last_line(text: str) -> str:
    """The last line of a traceback (the exception), or the text itself."""
    return text.strip().splitlines()[-1] if text.strip() else text


class ParallelRun:
    def __init__(self, plan: dict[str, Any], code_dir: Path, files: list[Path], temp_dir: Path | None,
                 faults: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.code_dir = code_dir
        size = plan["mini_batch_size"]
        self.batches = [[str(f) for f in files[i:i + size]] for i in range(0, len(files), size)]
        self.temp_dir = temp_dir  # None: no append_row output
        self.faults = dict(faults or {})
        self.ctx = mp.get_context("spawn")
        self.results: mp.Queue = self.ctx.Queue()
        self.workers: dict[int, Worker] = {}
        self.next_worker_id = 0
        self.pending: list[int] = list(range(len(self.batches)))
        self.progress = Progress()

    def start_worker(self) -> None:
        tasks = self.ctx.Queue()
        wid = self.next_worker_id
        self.next_worker_id += 1
        output = None
        if self.temp_dir is not None:
            # Each emulated node has its own address; its processes share it (the driver names files by both).
            instance = wid % max(1, self.plan["instance_count"])
            die = bool(self.faults.pop("rerun_after_append", False))
            output = {"dir": str(self.temp_dir), "file_name": self.plan["output_file_name"],
                      "ip": f"10.0.0.{4 + instance}", "die_after_append": die}
            if die:
                log(f"fault: worker {wid} dies after appending its first mini batch's rows")
        process = self.ctx.Process(
            target=worker_main,
            args=(wid, str(self.code_dir), self.plan["entry_script"], self.plan["program_arguments"],
                  self.plan["environment_variables"], tasks, self.results, output),
            daemon=True,
        )
        process.start()
        self.workers[wid] = Worker(process, tasks)

    def stop_worker(self, wid: int) -> None:
        worker = self.workers.pop(wid)
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)

    def batch_failed(self, batch_id: int, reason: str) -> None:
        progress = self.progress
        progress.tries[batch_id] = progress.tries.get(batch_id, 0) + 1
        progress.last_error[batch_id] = reason
        tries = progress.tries[batch_id]
        log(f"mini batch {batch_id} try {tries} failed: {reason}")
        if tries < self.plan["max_retries"]:
            self.pending.append(batch_id)
            return
        progress.failed_batches.append(batch_id)
        progress.failed_items += len(self.batches[batch_id])
        limit_batches = self.plan["mini_batch_error_threshold"]
        limit_items = self.plan["error_threshold"]
        over = (limit_batches != -1 and len(progress.failed_batches) > limit_batches) or (
            limit_items != -1 and progress.failed_items > limit_items
        )
        if over:
            files = [Path(f).name for f in self.batches[batch_id]]
            raise JobFailed(
                f"mini batch {batch_id} ({', '.join(files)}) failed after {tries} tries: "
                f"{last_line(reason)}; "
                f"{len(progress.failed_batches)} mini batch(es) / {progress.failed_items} file(s) failed, over "
                f"mini_batch_error_threshold={limit_batches} / error_threshold={limit_items}"
            )

    def run(self) -> Progress:
        count = self.plan["instance_count"] * self.plan["max_concurrency_per_instance"]
        count = max(1, min(count, len(self.batches)))
        if not self.batches:
            return self.progress
        log(f"{len(self.batches)} mini batch(es) of up to {self.plan['mini_batch_size']} file(s), "
            f"{count} worker process(es) ({self.plan['instance_count']} instance(s) x "
            f"{self.plan['max_concurrency_per_instance']} per instance)")
        for _ in range(count):
            self.start_worker()
        timeout = self.plan["timeout_seconds"]
        try:
            while self.progress.done + len(self.progress.failed_batches) < len(self.batches):
                self.dispatch()
                try:
                    kind, wid, batch_id, payload = self.results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    self.check_workers(timeout)
                    continue
                worker = self.workers.get(wid)
                if kind == "init_error":
                    raise JobFailed(f"init() of entry script {self.plan['entry_script']} failed: {last_line(payload)}")
                if worker is None:
                    continue  # a result from a worker we already replaced
                if kind == "ready":
                    worker.ready = True
                elif kind == "done":
                    worker.batch = None
                    self.progress.done += 1
                elif kind == "error":
                    worker.batch = None
                    self.batch_failed(batch_id, payload)
        finally:
            for wid in list(self.workers):
                self.workers[wid].tasks.put(None)
            for wid in list(self.workers):
                self.stop_worker(wid)
        if self.batches and self.progress.done == 0:
            first = self.progress.failed_batches[0]
            raise JobFailed(
                f"no mini batch succeeded: all {len(self.batches)} failed; mini batch {first} "
                f"({', '.join(Path(f).name for f in self.batches[first])}): "
                f"{last_line(self.progress.last_error.get(first, ''))}"
            )
        return self.progress

    def dispatch(self) -> None:
        for worker in self.workers.values():
            if worker.ready and worker.batch is None and self.pending:
                batch_id = self.pending.pop(0)
                worker.batch = batch_id
                worker.started = time.monotonic()
                worker.tasks.put((batch_id, self.batches[batch_id]))

    def check_workers(self, timeout: float) -> None:
        """Replace workers whose run() exceeded the timeout or that died."""
        for wid, worker in list(self.workers.items()):
            dead = not worker.process.is_alive()
            late = worker.batch is not None and time.monotonic() - worker.started > timeout
            if not (dead or late):
                continue
            batch_id = worker.batch
            self.stop_worker(wid)
            self.start_worker()
            if batch_id is not None:
                reason = f"run() exceeded the timeout of {timeout:g}s" if late else f"worker died (exit code {worker.process.exitcode})"
                self.batch_failed(batch_id, reason)
            elif dead and not worker.ready:
                raise JobFailed(f"a worker died during init() (exit code {worker.process.exitcode})")


def download_model(account: Any, container: str, path: str, target: Path) -> Path:
    """A model or file input: one blob (returns the file) or every blob under a folder (returns target)."""
    from local_stack.aml_service.blob import download_prefix

    if target.exists():
        import shutil

        shutil.rmtree(target)
    blob = account.client().get_blob_client(container, path.strip("/"))
    if blob.exists():
        target.mkdir(parents=True)
        with open(target / Path(path).name, "wb") as handle:
            blob.download_blob().readinto(handle)
        return target / Path(path).name
    if not download_prefix(account, container, path, target):
        raise FileNotFoundError(f"input path {container}/{path} holds no files")
    return target


def main(spec_file: str, work_dir: str) -> int:
    from local_stack.aml_service.blob import StorageAccount, download_prefix, upload_file

    spec = json.loads(Path(spec_file).read_text())
    plan = spec["plan"]
    account = StorageAccount(spec["connection_string"])
    work = Path(work_dir)
    try:
        say("STATUS", "Preparing")
        code_dir = work / "code"
        input_dir = work / "input"
        for folder in (code_dir, input_dir):
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
        download_prefix(account, plan["code"]["container"], plan["code"]["path"], code_dir)
        files = download_prefix(account, plan["input"]["container"], plan["input"]["path"], input_dir)
        log(f"{len(files)} input file(s) from {plan['input']['container']}/{plan['input']['path']}")
        if plan.get("model"):
            model_dir = work / "model"
            download_model(account, plan["model"]["container"], plan["model"]["path"], model_dir)
            plan["environment_variables"] = {**plan["environment_variables"], "AZUREML_MODEL_DIR": str(model_dir)}
        # Azure ML mounts (or downloads) each input and puts its path where the arguments say ${{inputs.<name>}}.
        paths = {plan["input_name"]: input_dir}
        for name, location in (plan.get("extra_inputs") or {}).items():
            paths[name] = download_model(account, location["container"], location["path"], work / "inputs" / name)
        for name, path in paths.items():
            placeholder = "${{inputs.%s}}" % name
            plan["program_arguments"] = [a.replace(placeholder, str(path)) for a in plan["program_arguments"]]
        temp_dir = None
        if plan["output"]:
            import shutil

            temp_dir = work / "output"
            shutil.rmtree(temp_dir, ignore_errors=True)  # a run again after a restart starts clean
        say("STATUS", "Running")
        progress = ParallelRun(plan, code_dir, files, temp_dir, spec.get("faults")).run()
        log(f"{progress.done} mini batch(es) done, {len(progress.failed_batches)} failed")
        say("STATUS", "Finalizing")
        if plan["output"]:
            out_file = work / "append_row.out"
            parts = concatenate(temp_dir, plan["output_file_name"], out_file)
            log(f"concatenated {parts} temp file(s) into {plan['output_file_name']}")
            upload_file(account, plan["output"]["container"], plan["output"]["path"], out_file)
        return 0
    except JobFailed as err:
        say("ERROR", json.dumps(str(err)))
        return 1
    except Exception as err:
        log(traceback.format_exc())
        say("ERROR", json.dumps(f"{type(err).__name__}: {err}"))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
