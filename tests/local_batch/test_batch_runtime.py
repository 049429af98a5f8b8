"""What a task on a local node can use: only what a real node gives it.

A bare node has the image's system PATH, the AZ_BATCH_* variables and the
environment settings; a scoring runtime arrives only as a container image
from the (local) registry or through the start task, and fails as on Azure
when it is missing or cannot be pulled.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from azure.batch import models

from batch_helpers import make_job, make_pool, read_file, unique, wait_for_tasks, wait_until
from local_stack.batch_service.task_process import SYSTEM_PATH
from local_stack.scoring_image import IDENTITY
from include.monthly.config import DagConfig
from include.monthly.runtime import VENV, recipe_command_line, scoring_argv, start_task

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCORE_PY = PROJECT_ROOT / "include" / "scoring" / "score.py"
PRINT_ENV = "python3 -c \"import json, os; print(json.dumps(dict(os.environ)))\""


def _container_pool(batch, registry: dict, registries: list[models.ContainerRegistryReference] | None,
                    prefetch: bool = True, vm_size: str = "standard_d2s_v3",
                    start: models.BatchStartTask | None = None) -> str:
    pool_id = unique("cpool")
    batch.create_pool(models.BatchPoolCreateOptions(
        id=pool_id, vm_size=vm_size, target_dedicated_nodes=1, task_slots_per_node=2, start_task=start,
        virtual_machine_configuration=models.VirtualMachineConfiguration(
            image_reference=models.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04",
            container_configuration=models.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=[registry["image"]] if prefetch else None,
                container_registries=registries),
        ),
    ))
    return pool_id


def _login(registry: dict, password: str | None = None) -> list[models.ContainerRegistryReference]:
    return [models.ContainerRegistryReference(registry_server=registry["server"], username=registry["username"],
                                              password=password or registry["password"])]


def _in_image(image: str, **kwargs) -> models.BatchTaskContainerSettings:
    return models.BatchTaskContainerSettings(image_name=image, **kwargs)


def test_a_task_sees_only_what_a_node_gives_it(batch):
    pool_id = make_pool(batch, nodes=1, slots=1, start_task=models.BatchStartTask(
        command_line="/bin/sh -c 'env > \"$AZ_BATCH_NODE_SHARED_DIR/start-env\"'", wait_for_success=True))
    job_id = make_job(batch, pool_id, common_environment_settings=[models.EnvironmentSetting(name="FROM_JOB", value="j")])
    batch.create_tasks(job_id, [
        models.BatchTaskCreateOptions(id="env", command_line=PRINT_ENV,
                                      environment_settings=[models.EnvironmentSetting(name="FROM_TASK", value="t")]),
        models.BatchTaskCreateOptions(id="start-env", command_line="/bin/sh -c 'cat \"$AZ_BATCH_NODE_SHARED_DIR/start-env\"'"),
    ])
    wait_for_tasks(batch, job_id, 2)
    env = json.loads(read_file(batch, job_id, "env", "stdout.txt"))
    # The service runs with the project's venv, PYTHONPATH and YOLO_* settings: none of it reaches the task.
    assert env["PATH"] == SYSTEM_PATH
    assert not {"VIRTUAL_ENV", "PYTHONPATH", "YOLO_OFFLINE", "YOLO_CONFIG_DIR", "LOCAL_BATCH_KEY"} & set(env)
    # (LC_CTYPE is python3's own C-locale coercion, PEP 538, set inside the process when no locale is given.)
    assert {k for k in env if not k.startswith("AZ_BATCH_")} - {"LC_CTYPE"} == {"PATH", "HOME", "FROM_JOB", "FROM_TASK"}
    assert env["AZ_BATCH_JOB_ID"] == job_id and env["AZ_BATCH_TASK_ID"] == "env"
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith(f"workitems/{job_id}/job-1/env/wd")
    assert env["AZ_BATCH_NODE_SHARED_DIR"].endswith("/shared") and "AZ_BATCH_NODE_MOUNTS_DIR" in env
    start_env = dict(line.split("=", 1) for line in read_file(batch, job_id, "start-env", "stdout.txt").splitlines())
    assert start_env["PATH"] == SYSTEM_PATH and "AZ_BATCH_NODE_STARTUP_DIR" in start_env
    assert "AZ_BATCH_JOB_ID" not in start_env and "AZ_BATCH_TASK_ID" not in start_env  # "all tasks except start task"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_score_py_on_a_node_without_a_runtime_fails_with_module_not_found(batch):
    """The misconfiguration of issue 13: a bare pool, the scoring command, every shard fails."""
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    batch.create_task(job_id, models.BatchTaskCreateOptions(id="score", command_line=f"python3 {SCORE_PY} --help"))
    wait_for_tasks(batch, job_id, 1)
    task = batch.get_task(job_id, "score")
    assert task.execution_info.result == "failure"
    assert task.execution_info.failure_info.code == "FailureExitCode"
    assert "ModuleNotFoundError" in read_file(batch, job_id, "score", "stderr.txt")
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_the_scoring_artifact_alone_runs_in_the_scoring_image(batch, scoring_registry, tmp_path):
    """What a Batch task gets (the zipapp, one file, outside the repository) runs with only the image's runtime."""
    from include.scoring import artifact

    shipped = artifact.write(tmp_path)
    assert shipped.read_bytes() == artifact.build()  # deterministic: the same code, the same bytes
    pool_id = _container_pool(batch, scoring_registry, _login(scoring_registry))
    job_id = make_job(batch, pool_id)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="help", command_line=f"python3 {shipped} --help", container_settings=_in_image(scoring_registry["image"])))
    wait_for_tasks(batch, job_id, 1)
    assert batch.get_task(job_id, "help").execution_info.result == "success", read_file(batch, job_id, "help", "stderr.txt")
    assert "usage: score.py" in read_file(batch, job_id, "help", "stdout.txt")
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_the_scoring_image_runs_score_py_in_a_container_task(batch, scoring_registry):
    pool_id = _container_pool(batch, scoring_registry, _login(scoring_registry))
    job_id = make_job(batch, pool_id)
    image = scoring_registry["image"]
    batch.create_tasks(job_id, [
        models.BatchTaskCreateOptions(id="help", command_line="python3 score.py --help",
                                      container_settings=_in_image(image, working_directory="containerImageDefault")),
        models.BatchTaskCreateOptions(id="env", command_line=PRINT_ENV, container_settings=_in_image(
            image, container_run_options="--rm -e FROM_RUN_OPTIONS=1")),
    ])
    wait_for_tasks(batch, job_id, 2)
    assert batch.get_task(job_id, "help").execution_info.result == "success", read_file(batch, job_id, "help", "stderr.txt")
    assert "--require-cuda" in read_file(batch, job_id, "help", "stdout.txt")
    env = json.loads(read_file(batch, job_id, "env", "stdout.txt"))
    assert env["PATH"].split(":")[0].endswith("yolo-scoring-1/venv/bin") and env["FROM_RUN_OPTIONS"] == "1"
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith(f"{job_id}/job-1/env/wd")
    assert {n.state for n in batch.list_nodes(pool_id)} <= {"idle", "running"}
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_unknown_image_and_wrong_credentials_fail_as_a_pull_does(batch, scoring_registry):
    server = scoring_registry["server"]
    # Prefetch with a wrong password: the node cannot pull the pool's image and takes no task.
    bad_pool = _container_pool(batch, scoring_registry, _login(scoring_registry, password="wrong"))
    node = wait_until(lambda: next((n for n in batch.list_nodes(bad_pool) if n.state == "unusable"), None),
                      what="an unusable node")
    assert node.errors[0].code == "ContainerInvalidRegistry"
    # Pull at task start (no prefetch): unknown image, no login, a login for an identity that may not pull.
    pool_id = _container_pool(batch, scoring_registry, _login(scoring_registry), prefetch=False)
    job_id = make_job(batch, pool_id)
    other_identity = models.ContainerRegistryReference(
        registry_server=server, identity_reference=models.BatchNodeIdentityReference(resource_id=IDENTITY + "-other"))
    good_identity = models.ContainerRegistryReference(
        registry_server=server, identity_reference=models.BatchNodeIdentityReference(resource_id=IDENTITY))
    batch.create_tasks(job_id, [
        models.BatchTaskCreateOptions(id="unknown", command_line="python3 -c pass",
                                      container_settings=_in_image(f"{server}/no-such-image:1")),
        models.BatchTaskCreateOptions(id="elsewhere", command_line="python3 -c pass",
                                      container_settings=_in_image("ultralytics/ultralytics:latest")),
        models.BatchTaskCreateOptions(id="identity-denied", command_line="python3 -c pass",
                                      container_settings=_in_image(scoring_registry["image"], registry=other_identity)),
        models.BatchTaskCreateOptions(id="identity-ok", command_line="python3 -c 'import ultralytics'",
                                      container_settings=_in_image(scoring_registry["image"], registry=good_identity)),
    ])
    wait_for_tasks(batch, job_id, 4)
    codes = {t.id: (t.execution_info.failure_info.code if t.execution_info.failure_info else t.execution_info.result)
             for t in batch.list_tasks(job_id)}
    # Even an identity the registry lets pull fails: only the management API gives a pool an identity.
    assert codes == {"unknown": "ContainerInvalidImage", "elsewhere": "ContainerInvalidImage",
                     "identity-denied": "ContainerInvalidRegistry", "identity-ok": "ContainerInvalidRegistry"}
    assert "the pool has no user-assigned identity" in read_file(batch, job_id, "identity-ok", "stderr.txt")
    assert batch.get_task(job_id, "unknown").execution_info.retry_count == 0
    for pool in (bad_pool, pool_id):
        batch.begin_delete_pool(pool, polling_interval=0).result()


def test_a_container_task_on_a_pool_without_container_configuration_fails(batch, scoring_registry):
    pool_id = make_pool(batch, nodes=1, slots=1)
    job_id = make_job(batch, pool_id)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="c", command_line="python3 -c pass", container_settings=_in_image(scoring_registry["image"])))
    wait_for_tasks(batch, job_id, 1)
    assert batch.get_task(job_id, "c").execution_info.failure_info.code == "ContainerInvalidSettings"
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def _tiny_wheel(folder: Path) -> None:
    """A one-module wheel (tinyscore 1.0), so the recipe installs something real without a download."""
    name = "tinyscore-1.0.dist-info"
    files = {"tinyscore/__init__.py": "VALUE = 42\n",
             f"{name}/METADATA": "Metadata-Version: 2.1\nName: tinyscore\nVersion: 1.0\n",
             f"{name}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{name}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{name}/RECORD,,\n"
    with zipfile.ZipFile(folder / "tinyscore-1.0-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def test_the_start_task_recipe_builds_the_venv_that_tasks_then_use(batch, tmp_path):
    """The pinned recipe, run for real as a start task (with a tiny pin instead of the 5 GB torch stack)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels)
    recipe = models.BatchStartTask(
        command_line=recipe_command_line(["tinyscore==1.0"], check="import tinyscore"),
        environment_settings=[models.EnvironmentSetting(name="PIP_NO_INDEX", value="1"),
                              models.EnvironmentSetting(name="PIP_FIND_LINKS", value=str(wheels))],
        user_identity=models.UserIdentity(auto_user=models.AutoUserSpecification(scope="pool", elevation_level="admin")),
        wait_for_success=True, max_task_retry_count=1)
    pool_id = make_pool(batch, nodes=1, slots=1, start_task=recipe)
    job_id = make_job(batch, pool_id)
    config = DagConfig(scoring_runtime="venv", vm_size="Standard_D2s_v3")
    argv = scoring_argv(config, ["-c", "import os, tinyscore; print(tinyscore.VALUE, tinyscore.__file__, os.environ['HOME'])"])
    import shlex

    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="uses-venv", command_line=shlex.join(argv),
        user_identity=models.UserIdentity(auto_user=models.AutoUserSpecification(scope="task", elevation_level="nonadmin"))))
    wait_for_tasks(batch, job_id, 1, timeout=180)
    node = next(iter(batch.list_nodes(pool_id)))
    assert node.start_task_info.result == "success", node.start_task_info
    task = batch.get_task(job_id, "uses-venv")
    assert task.execution_info.result == "success", read_file(batch, job_id, "uses-venv", "stderr.txt")
    value, module, home = read_file(batch, job_id, "uses-venv", "stdout.txt").split()
    assert value == "42" and "/shared/scoring-venv/" in module
    assert "autouser-task-" in home  # the task's own auto-user, not the start task's pool admin
    assert VENV.startswith("$AZ_BATCH_NODE_SHARED_DIR")
    batch.begin_delete_pool(pool_id, polling_interval=0).result()


def test_a_gpu_pool_fails_fast_on_a_node_without_cuda(batch, scoring_registry):
    """GPU means GPU: the start task's driver check stops the node; score.py refuses a CPU fallback."""
    config = DagConfig(scoring_runtime="container", container_image=scoring_registry["image"],
                       vm_size="Standard_NC4as_T4_v3")
    import shutil
    import subprocess

    # A local node is this machine: on one with a working NVIDIA driver the check passes instead.
    driver = shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    check = start_task(config)
    gpu_pool = _container_pool(batch, scoring_registry, _login(scoring_registry), vm_size=config.vm_size,
                               start=models.BatchStartTask(command_line=check["command_line"], wait_for_success=True))
    wanted = "idle" if driver else "starttaskfailed"
    node = wait_until(lambda: next((n for n in batch.list_nodes(gpu_pool) if n.state == wanted), None),
                      what=f"node in {wanted}")
    assert (node.start_task_info.exit_code == 0) == driver
    # Without the check (a pool made elsewhere), the task itself refuses at once.
    pool_id = _container_pool(batch, scoring_registry, _login(scoring_registry), vm_size=config.vm_size)
    job_id = make_job(batch, pool_id)
    argv = scoring_argv(config, ["score.py", "--images", "manifest.txt", "--output", "predictions.csv"])
    assert argv[-1] == "--require-cuda"
    import shlex

    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="score", command_line=shlex.join(argv),
        container_settings=_in_image(scoring_registry["image"], working_directory="containerImageDefault")))
    wait_for_tasks(batch, job_id, 1)
    if not driver:
        assert batch.get_task(job_id, "score").execution_info.exit_code == 1
        assert "--require-cuda: CUDA is not available on this node" in read_file(batch, job_id, "score", "stderr.txt")
    for pool in (gpu_pool, pool_id):
        batch.begin_delete_pool(pool, polling_interval=0).result()


def test_a_registry_without_a_login_is_refused_at_pool_creation(batch, scoring_registry):
    from azure.core.exceptions import HttpResponseError

    try:
        _container_pool(batch, scoring_registry, [models.ContainerRegistryReference(registry_server="x.azurecr.io")])
    except HttpResponseError as err:
        assert (err.status_code, err.error.code) == (400, "InvalidPropertyValue")
    else:
        raise AssertionError("a containerRegistries entry without credentials was accepted")
