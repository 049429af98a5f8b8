"""Job execution of the local Azure ML endpoint: resolve a submitted job, run it, track its state.

A pipeline job's parallel step is resolved into a plain `ParallelRunPlan` (where the code, the
input folder and the output file live in Azurite, and the step's settings), which a
`parallel_driver` subprocess executes. The job moves Queued -> Preparing -> Running ->
Finalizing -> Completed, or Failed (with the error in the run-history details, as a
workspace reports it) or Canceled. One job runs at a time (a small machine); the others wait Queued.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import signal
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_stack.aml_service.blob import StorageAccount
from local_stack.aml_service.resource_store import ResourceStore

if TYPE_CHECKING:
    from local_stack.aml_service.app import AmlService

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TERMINAL_STATES = frozenset({"Completed", "Failed", "Canceled"})
#: States a real job can be left in that the SDK also counts as terminal (_run_history_constants.py);
#: the local endpoint only enters them when a test forces them (POST /_local/jobs/<name>/status).
FORCED_STATES = frozenset({"NotResponding", "Paused"})
#: Where the local endpoint keeps a failed job's error for its run-history details (not on the job:
#: a real workspace returns the error from run history, GET .../runs/<id>/details).
ERROR_KEY = "runError"
#: Where the local endpoint keeps a job's run-history times (Run.startTimeUtc/endTimeUtc).
TIMES_KEY = "runTimes"
#: Azure ML's default name of the append_row output file.
DEFAULT_APPEND_ROW_FILE = "parallel_run_step.txt"
#: Parallel-runner arguments that belong to the runner, not to the entry script.
RUNNER_ARGUMENTS = {"--append_row_file_name"}
_DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<datastore>[^/]+)/paths/(?P<path>.*)$")
_BINDING = re.compile(r"^\$\{\{\s*(?P<scope>parent\.)?(?P<kind>inputs|outputs)\.(?P<name>[\w-]+)\s*\}\}$")


class DatastoreNotFound(ValueError):
    """A job names a datastore the workspace does not have: the job is accepted and then fails."""

    def __init__(self, name: str) -> None:
        # The wording a workspace reports for a pipeline step on an unregistered datastore (see README).
        super().__init__(f"UserError: Failed to submit job due to Exception: Response status code does not "
                         f"indicate success: 404 (Could not find datastore: {name}.).")


@dataclass
class BlobLocation:
    container: str
    path: str


@dataclass
class ParallelRunPlan:
    """Everything the runner needs for one parallel step, resolved from the ARM documents."""

    job_name: str
    code: BlobLocation
    entry_script: str
    program_arguments: list[str]
    input_name: str
    input: BlobLocation
    output: BlobLocation | None
    #: the append_row file name as the driver uses it (lower-cased)
    output_file_name: str = DEFAULT_APPEND_ROW_FILE
    mini_batch_size: int = 10
    error_threshold: int = -1
    mini_batch_error_threshold: int = -1
    max_retries: int = 3
    timeout_seconds: float = 60.0
    instance_count: int = 1
    max_concurrency_per_instance: int = 1
    environment_variables: dict[str, str] = field(default_factory=dict)
    #: a model (file or folder) to download and expose as AZUREML_MODEL_DIR
    model: BlobLocation | None = None
    #: further inputs (a file or a folder each), downloaded and put where ${{inputs.<name>}} is
    extra_inputs: dict[str, BlobLocation] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParallelRunPlan:
        values = dict(data)
        for key in ("code", "input", "output", "model"):
            if values.get(key) is not None:
                values[key] = BlobLocation(**values[key])
        values["extra_inputs"] = {k: BlobLocation(**v) for k, v in (values.get("extra_inputs") or {}).items()}
        return cls(**values)


def stop_leftover_runner(pid_file: Path) -> None:
    """Kill the process group of a runner that an earlier service process started and left behind."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    pid_file.unlink(missing_ok=True)
    try:
        if os.getpgid(pid) == pid:  # still the group leader we started (start_new_session)
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


#: Characters the driver refuses in --append_row_file_name (its argument validator).
_BAD_FILE_NAME = re.compile(r'[~"#%&*:<>?/\\{|}]')


def append_row_file_name(name: str, folder: str) -> str:
    """The output file name as the driver uses it: lower-cased, no path characters, path <= 260."""
    if not name or _BAD_FILE_NAME.search(name) or len(f"{folder}/{name}") > 260:
        raise ValueError(
            f"append_row_file_name must be a valid UNIX file name; {name!r} is empty, too long or contains "
            'one of ~"#%&*:<>?/\\{|}'
        )
    return name.lower()  # the driver's argument parser lower-cases it (type=str.lower)


def output_file_name_of(output: BlobLocation | None) -> str:
    return output.path.rsplit("/", 1)[-1] if output else DEFAULT_APPEND_ROW_FILE


def _int(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _seconds(value: Any, default: float) -> float:
    """Seconds from an int or an ISO-8601 duration such as PT1M30S."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)) or str(value).isdigit():
        return float(value)
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", str(value))
    if not match:
        raise ValueError(f"timeout must be seconds or an ISO-8601 duration, got {value!r}")
    days, hours, minutes, secs = (float(x) if x else 0.0 for x in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + secs


class JobScheduler:
    """Runs submitted jobs one at a time in runner subprocesses and records their states."""

    def __init__(self, store: ResourceStore, storage_connection_string: str, state_dir: Path) -> None:
        self.store = store
        self.connection_string = storage_connection_string
        self.state_dir = state_dir
        self.service: AmlService | None = None
        self._slot = asyncio.Semaphore(1)
        self._tasks: dict[str, asyncio.Task] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._canceled: set[str] = set()
        #: faults for the next job that starts (PUT /_local/faults), consumed by it
        self.next_job_faults: dict[str, Any] = {}

    def attach(self, service: AmlService) -> None:
        self.service = service

    # --- resolution ----------------------------------------------------------

    def _rel(self, arm_id: str) -> str:
        """A workspace-relative path from an ARM id (with or without the azureml: prefix)."""
        arm_id = arm_id.removeprefix("azureml:")
        marker = "/workspaces/"
        index = arm_id.lower().find(marker)
        if index < 0:
            return arm_id
        return arm_id[index + len(marker):].split("/", 1)[1]

    def _resource(self, arm_id: str, what: str) -> dict[str, Any]:
        doc = self.store.get(self._rel(arm_id))
        if doc is None:
            raise ValueError(f"{what} {arm_id!r} does not exist in the workspace")
        return doc

    def _datastore_location(self, uri: str, what: str) -> BlobLocation:
        match = _DATASTORE_URI.match(uri or "")
        if not match:
            raise ValueError(f"{what} must be an azureml://datastores/<name>/paths/<path> URI, got {uri!r}")
        datastore = self.store.get(f"datastores/{match['datastore']}")
        if datastore is None:
            raise DatastoreNotFound(match["datastore"])
        return BlobLocation(datastore["properties"]["containerName"], match["path"].strip("/"))

    def _code_location(self, code_id: str) -> BlobLocation:
        code = self._resource(code_id, "code asset")
        uri = code["properties"].get("codeUri") or ""
        endpoint = StorageAccount(self.connection_string).blob_endpoint + "/"
        if not uri.startswith(endpoint):
            raise ValueError(f"code asset {code_id!r} is not in this workspace's storage ({uri!r})")
        container, _, path = uri[len(endpoint):].partition("/")
        return BlobLocation(container, path.strip("/"))

    def plan(self, doc: dict[str, Any]) -> ParallelRunPlan:
        """The ParallelRunPlan of a job document; ValueError names what the local endpoint cannot run."""
        stored = self.store.get(f"plans/{doc['name']}")
        if stored is not None:  # resolved when the job was created (batch endpoint invoke)
            return ParallelRunPlan.from_dict(stored)
        props = doc["properties"]
        job_type = props.get("jobType")
        if job_type != "Pipeline":
            raise ValueError(f"the local endpoint runs pipeline jobs with one parallel step; got jobType {job_type!r}")
        nodes = props.get("jobs") or {}
        parallel = [(name, node) for name, node in nodes.items() if node.get("type") == "parallel"]
        if len(parallel) != 1 or len(nodes) != 1:
            raise ValueError(
                f"the local endpoint runs pipelines of exactly one parallel step; job has steps "
                f"{ {name: node.get('type') for name, node in nodes.items()} }"
            )
        step_name, node = parallel[0]
        component = self._resource(node.get("componentId") or "", f"component of step {step_name}")
        spec = component["properties"].get("componentSpec") or {}

        def setting(key: str) -> Any:
            return node.get(key) if node.get(key) not in (None, "") else spec.get(key)

        task = spec.get("task") or {}
        if task.get("type") != "run_function":
            raise ValueError(f"step {step_name}: only run_function tasks are supported, got {task.get('type')!r}")
        environment = task.get("environment")
        if isinstance(environment, str) and "/environments/" in environment:
            self._resource(environment, f"environment of step {step_name}")
        retry = {**(spec.get("retry_settings") or {}), **(node.get("retry_settings") or {})}
        resources = {**(spec.get("resources") or {}), **(node.get("resources") or {})}
        arguments = shlex.split(task.get("program_arguments") or "")

        input_name = self._binding_name(setting("input_data") or "", "inputs", f"step {step_name} input_data")
        input_uri = self._resolve_io(props, node, "inputs", input_name, step_name)
        extra_inputs = {}
        for name in node.get("inputs") or {}:
            if name != input_name:
                uri = self._resolve_io(props, node, "inputs", name, step_name) or ""
                extra_inputs[name] = self._input_location(uri, f"input {name}")
        output = None
        append_row_to = task.get("append_row_to")
        if append_row_to:
            output_name = self._binding_name(append_row_to, "outputs", f"step {step_name} append_row_to")
            output_uri = self._resolve_io(props, node, "outputs", output_name, step_name) or (
                f"azureml://datastores/workspaceblobstore/paths/azureml/{doc['name']}/{output_name}/"
            )
            folder = self._datastore_location(output_uri, f"output {output_name}")
            file_name = DEFAULT_APPEND_ROW_FILE
            if "--append_row_file_name" in arguments:
                index = arguments.index("--append_row_file_name")
                file_name = arguments[index + 1] if index + 1 < len(arguments) else ""
            file_name = append_row_file_name(file_name, folder.path)
            output = BlobLocation(folder.container, f"{folder.path}/{file_name}".lstrip("/"))
        entry_arguments = []
        skip = False
        for arg in arguments:
            if skip:
                skip = False
                continue
            if arg in RUNNER_ARGUMENTS:
                skip = True
                continue
            entry_arguments.append(arg)
        return ParallelRunPlan(
            job_name=doc["name"],
            code=self._code_location(task.get("code") or ""),
            entry_script=task.get("entry_script") or "",
            program_arguments=entry_arguments,
            input_name=input_name,
            input=self._datastore_location(input_uri or "", f"input {input_name}"),
            output=output,
            output_file_name=output_file_name_of(output),
            mini_batch_size=_int(setting("mini_batch_size"), 10, "mini_batch_size"),
            error_threshold=_int(setting("error_threshold"), -1, "error_threshold"),
            mini_batch_error_threshold=_int(setting("mini_batch_error_threshold"), -1, "mini_batch_error_threshold"),
            max_retries=_int(retry.get("max_retries"), 3, "retry_settings.max_retries"),
            timeout_seconds=_seconds(retry.get("timeout"), 60.0),
            instance_count=_int(resources.get("instance_count"), 1, "instance_count"),
            max_concurrency_per_instance=_int(setting("max_concurrency_per_instance"), 1, "max_concurrency_per_instance"),
            environment_variables={str(k): str(v) for k, v in (setting("environment_variables") or {}).items()},
            extra_inputs=extra_inputs,
        )

    def _input_location(self, uri: str, what: str) -> BlobLocation:
        """A datastore path, or a registered model (whose files are on a datastore)."""
        short = re.fullmatch(r"azureml:([^/:]+):([^/:]+)", uri)  # azureml:<name>:<version>
        if short:
            uri = f"models/{short[1]}/versions/{short[2]}"
        if re.search(r"(^|/)models/[^/]+/versions/[^/]+$", uri) and not uri.startswith("azureml://datastores/"):
            model = self._resource(uri, f"model of {what}")
            uri = _short_uri(model["properties"].get("modelUri") or "")
        return self._datastore_location(uri, what)

    @staticmethod
    def _binding_name(value: str, kind: str, what: str) -> str:
        match = _BINDING.match(value.strip())
        if not match or match["kind"] != kind:
            raise ValueError(f"{what} must be ${{{{{kind}.<name>}}}}, got {value!r}")
        return match["name"]

    @staticmethod
    def _resolve_io(props: dict, node: dict, kind: str, name: str, step: str) -> str | None:
        """The URI bound to a step's input or output, following ${{parent.<kind>.X}} to the pipeline."""
        binding = (node.get(kind) or {}).get(name)
        if binding is None:
            if kind == "outputs":
                return None
            raise ValueError(f"step {step} has no {kind[:-1]} {name!r}")
        if binding.get("uri"):
            return binding["uri"]
        value = str(binding.get("value") or "")
        match = _BINDING.match(value)
        if match and match["scope"] and match["kind"] == kind:
            pipeline_io = (props.get(kind) or {}).get(match["name"]) or {}
            return pipeline_io.get("uri")
        if kind == "inputs":
            raise ValueError(f"step {step} input {name!r} is bound to {value!r}, which is not a folder URI")
        return None

    def validate(self, doc: dict[str, Any]) -> None:
        self.plan(doc)

    # --- state ---------------------------------------------------------------

    def set_status(self, name: str, status: str, error: str | None = None) -> None:
        doc = self.store.get(f"jobs/{name}")
        if doc is None:
            return
        props = doc["properties"]
        if props.get("status") in TERMINAL_STATES | FORCED_STATES:
            return
        props["status"] = status
        self.store.put(f"jobs/{name}", "jobs", doc)
        self._record_time(name, status)
        if error:
            self.store.put(f"run-errors/{name}", ERROR_KEY, {"code": "UserError", "message": error[-4000:]})
        log.info("job %s: %s%s", name, status, f" ({error})" if error else "")

    async def submit(self, name: str) -> None:
        self.set_status(name, "Queued")
        self._tasks[name] = asyncio.create_task(self._run(name))

    async def resume_unfinished(self) -> None:
        """After a restart: jobs that had not finished run again from the start."""
        for doc in self.store.list("jobs"):
            status = doc["properties"].get("status")
            if status == "CancelRequested":
                self._finish_canceled(doc["name"])
            elif status not in TERMINAL_STATES | FORCED_STATES:
                await self.submit(doc["name"])

    def _record_time(self, name: str, status: str) -> None:
        """Run history's start (first Running) and end (a terminal state) of a job, in UTC."""
        times = self.store.get(f"run-times/{name}") or {}
        stamp = _utc_now()
        if status == "Running" and "startTimeUtc" not in times:
            times["startTimeUtc"] = times["lastStartTimeUtc"] = stamp
        elif status in TERMINAL_STATES and "endTimeUtc" not in times:
            times["endTimeUtc"] = stamp
        else:
            return
        self.store.put(f"run-times/{name}", TIMES_KEY, times)

    def run_times(self, name: str) -> dict[str, str]:
        """The run-history times a job has so far (startTimeUtc, lastStartTimeUtc, endTimeUtc)."""
        return self.store.get(f"run-times/{name}") or {}

    def run_error(self, name: str) -> dict[str, str] | None:
        """The error a failed job recorded (what its run-history details carry)."""
        return self.store.get(f"run-errors/{name}")

    async def force_status(self, name: str, status: str) -> None:
        """Leave a job in NotResponding or Paused, as a node that stopped heartbeating would (a test fault)."""
        doc = self.store.get(f"jobs/{name}")
        if doc is None or doc["properties"].get("status") in TERMINAL_STATES:
            return
        doc["properties"]["status"] = status
        self.store.put(f"jobs/{name}", "jobs", doc)
        proc = self._procs.get(name)
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def cancel(self, name: str) -> None:
        doc = self.store.get(f"jobs/{name}")
        if doc is None or doc["properties"].get("status") in TERMINAL_STATES:
            return
        self._canceled.add(name)
        self.set_status(name, "CancelRequested")
        proc = self._procs.get(name)
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        elif name not in self._procs:
            self._finish_canceled(name)

    def _finish_canceled(self, name: str) -> None:
        doc = self.store.get(f"jobs/{name}")
        if doc is not None:
            doc["properties"]["status"] = "Canceled"
            self.store.put(f"jobs/{name}", "jobs", doc)
            self._record_time(name, "Canceled")

    async def shutdown(self) -> None:
        """Stop runners without marking their jobs: a restart runs them again."""
        for proc in self._procs.values():
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for task in self._tasks.values():
            task.cancel()

    # --- execution -----------------------------------------------------------

    async def _run(self, name: str) -> None:
        async with self._slot:
            if name in self._canceled:
                self._finish_canceled(name)
                return
            doc = self.store.get(f"jobs/{name}")
            if doc is None:
                return
            try:
                plan = self.plan(doc)
            except ValueError as err:
                self.set_status(name, "Failed", str(err))
                return
            await self._run_plan(name, plan)

    async def _run_plan(self, name: str, plan: ParallelRunPlan) -> None:
        work = self.state_dir / "runs" / name
        work.mkdir(parents=True, exist_ok=True)
        stop_leftover_runner(work / "runner.pid")  # a runner orphaned when the service was killed
        spec_file = work / "plan.json"
        faults, self.next_job_faults = self.next_job_faults, {}
        spec_file.write_text(json.dumps({"plan": asdict(plan), "connection_string": self.connection_string,
                                         "faults": faults}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
        log_file = open(work / "runner.log", "ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "local_stack.aml_service.parallel_driver", str(spec_file), str(work),
            cwd=str(PROJECT_ROOT), env=env, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        (work / "runner.pid").write_text(str(proc.pid))
        self._procs[name] = proc
        error: str | None = None
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("STATUS "):
                self.set_status(name, line[7:].strip())
            elif line.startswith("ERROR "):
                error = json.loads(line[6:])
        code = await proc.wait()
        self._procs.pop(name, None)
        if name in self._canceled:
            self._finish_canceled(name)
        elif code == 0 and error is None:
            self.set_status(name, "Completed")
        else:
            self.set_status(name, "Failed", error or f"the parallel runner exited with code {code}; see {work / 'runner.log'}")

    async def create_endpoint_job(self, endpoint: str, deployment: dict[str, Any], props: dict[str, Any]) -> dict:
        """The job of a batch endpoint invoke (created and started once per name); returns its document."""
        name = props.get("name") or f"batchjob-{os.urandom(6).hex()}"
        existing = self.store.get(f"jobs/{name}")
        if existing is not None:
            return existing
        plan = self._deployment_plan(name, deployment, props)  # ValueError: the caller answers 400
        assert self.service is not None
        doc = self.service.envelope("jobs", name, {"properties": {
            "jobType": "Pipeline",
            "jobs": {},
            "displayName": name,
            "experimentName": (props.get("properties") or {}).get("experimentName") or endpoint,
            "tags": props.get("tags") or {},
            "properties": {"azureml.batchrun": "true", "azureml.endpointname": endpoint,
                           "azureml.deploymentname": deployment["name"]},
            "status": "NotStarted",
        }})
        self.store.put(f"plans/{name}", "plans", asdict(plan))
        self.store.put(f"jobs/{name}", "jobs", doc)
        await self.submit(name)
        return self.store.get(f"jobs/{name}")

    def deployment_for(self, endpoint: str, endpoint_doc: dict, wanted: str | None) -> dict | str:
        """The deployment an invoke goes to (header, else the endpoint default, else the only one)."""
        prefix = f"batchEndpoints/{endpoint}/deployments/"
        name = wanted or ((endpoint_doc["properties"].get("defaults") or {}).get("deploymentName"))
        if name:
            doc = self.store.get(prefix + name)
            return doc if doc is not None else f"deployment {name!r} of batch endpoint {endpoint!r} was not found"
        deployments = self.store.list("deployments", prefix)
        if len(deployments) == 1:
            return deployments[0]
        return f"batch endpoint {endpoint!r} has {len(deployments)} deployments and no default; name one"

    def _deployment_plan(self, name: str, deployment: dict, props: dict) -> ParallelRunPlan:
        dep = deployment["properties"]
        inputs = props.get("inputData") or {}
        input_uri = next((v.get("uri") for v in inputs.values() if isinstance(v, dict) and v.get("uri")), None)
        if not input_uri:
            raise ValueError("invoke needs an input folder (inputData with a uri)")
        outputs = props.get("outputData") or {}
        output_file = next((v.get("uri") for v in outputs.values() if isinstance(v, dict) and v.get("uri")), None)
        output = None
        if (dep.get("outputAction") or "AppendRow").lower() == "appendrow":
            if output_file:  # a uri_file output: the file the rows go to (the app refused anything else)
                folder_uri, _, file_name = output_file.rstrip("/").rpartition("/")
                folder = self._datastore_location(folder_uri + "/", "output")
            else:
                folder = self._datastore_location(
                    f"azureml://datastores/workspaceblobstore/paths/azureml/{name}/score/", "output")
                file_name = dep.get("outputFileName") or "predictions.csv"
            file_name = append_row_file_name(file_name, folder.path)
            output = BlobLocation(folder.container, f"{folder.path}/{file_name}".lstrip("/"))
        model = None
        asset = (dep.get("model") or {}).get("assetId")
        if asset:
            model = self._input_location(asset, "deployment model")
        code = dep.get("codeConfiguration") or {}
        retry = dep.get("retrySettings") or {}
        return ParallelRunPlan(
            job_name=name,
            code=self._code_location(code.get("codeId") or ""),
            entry_script=code.get("scoringScript") or "",
            program_arguments=[],
            input_name="input_data",
            input=self._datastore_location(input_uri, "input"),
            output=output,
            output_file_name=output_file_name_of(output),
            mini_batch_size=_int(dep.get("miniBatchSize"), 10, "miniBatchSize"),
            error_threshold=_int(dep.get("errorThreshold"), -1, "errorThreshold"),
            max_retries=_int(retry.get("maxRetries"), 3, "retrySettings.maxRetries"),
            timeout_seconds=_seconds(retry.get("timeout"), 30.0),
            instance_count=_int((dep.get("resources") or {}).get("instanceCount"), 1, "instanceCount"),
            max_concurrency_per_instance=_int(dep.get("maxConcurrencyPerInstance"), 1, "maxConcurrencyPerInstance"),
            environment_variables={str(k): str(v) for k, v in (dep.get("environmentVariables") or {}).items()},
            model=model,
        )


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short_uri(uri: str) -> str:
    """azureml://subscriptions/.../datastores/<ds>/paths/<p> -> azureml://datastores/<ds>/paths/<p>."""
    index = uri.find("/datastores/")
    return "azureml:/" + uri[index:] if uri.startswith("azureml://") and index >= 0 else uri
