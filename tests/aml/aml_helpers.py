"""Helpers for the Azure ML tests: a toy entry script, month uploads, direct submission, trigger waits."""
from __future__ import annotations

import asyncio
import csv
import io
import textwrap
import uuid
from pathlib import Path

from azure_compute.hooks.aml import AzureMLHook
from azure_compute.operators.aml import (
    ParallelScoringSettings,
    build_scoring_pipeline,
    datastore_uri,
    make_environment,
)
from azure_compute.triggers.aml import AzureMLJobTrigger

#: A small entry script with the Azure ML contract whose behaviour depends on file names:
#: bad* raise in run(), slow* sleep past any short timeout, nap* take a second, everything else gives one row.
TOY_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import pandas as pd

    def init():
        global TAG, WEIGHTS
        TAG = sys.argv[sys.argv.index("--tag") + 1] if "--tag" in sys.argv else ""
        WEIGHTS = os.path.getsize(sys.argv[sys.argv.index("--weights") + 1]) if "--weights" in sys.argv else ""
        if os.environ.get("FAIL_INIT"):
            raise RuntimeError("model weights missing")

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            name = os.path.basename(path)
            if name.startswith("bad"):
                raise ValueError(f"cannot score {name}")
            if name.startswith("slow"):
                time.sleep(60)
            if name.startswith("nap"):
                time.sleep(1)
            rows.append({"image": name, "bytes": os.path.getsize(path), "tag": TAG, "weights_bytes": WEIGHTS})
        return pd.DataFrame(rows)
    """
)


def upload_month(local_aml, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        local_aml.images.upload_blob(f"{prefix}/{name}", data, overwrite=True)


#: The columns of the toy entry script's DataFrame (the driver writes no header).
TOY_COLUMNS = ["image", "bytes", "tag", "weights_bytes"]


def read_output(local_aml, job_name: str, columns: list[str] = TOY_COLUMNS) -> list[dict[str, str]]:
    """The job's append_row file, read as the driver writes it: space-separated, no header."""
    blob = f"azureml/{job_name}/predictions/predictions.csv"
    text = local_aml.workspace_store.download_blob(blob).readall().decode()
    return [dict(zip(columns, row)) for row in csv.reader(io.StringIO(text), delimiter=" ") if row]


def submit_direct(hook: AzureMLHook, code: Path, prefix: str, weights: str | None = None, **settings) -> str:
    """Submit the scoring pipeline with the hook alone (no Airflow task), return the job name."""
    name = f"direct-{uuid.uuid4().hex[:10]}"
    job = build_scoring_pipeline(
        settings=ParallelScoringSettings(
            code_dir=str(code),
            entry_script="toy_entry.py",
            environment=make_environment("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"),
            **settings,
        ),
        input_path=datastore_uri("images", prefix),
        output_path=datastore_uri("workspaceblobstore", f"azureml/{name}/predictions"),
        compute="gpu-cluster",
        job_name=name,
        experiment_name="tests",
        weights=weights,
    )
    from azure.ai.ml.entities import AmlCompute

    hook.client.compute.begin_create_or_update(
        AmlCompute(name="gpu-cluster", size="Standard_NC4as_T4_v3", tier="low_priority", max_instances=2)
    ).result()
    hook.submit_job(job)
    return name


def wait_with_trigger(conn_id: str, job_name: str, timeout: float | None = 300) -> dict:
    """Run the trigger on an event loop until its event, as the triggerer would."""
    trigger = AzureMLJobTrigger(job_name=job_name, azure_ml_conn_id=conn_id, poll_interval=0.5, timeout=timeout)

    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


def register_datastores(endpoint: AmlEndpoint, datastores: dict[str, str]) -> None:
    """Register datastores through MLClient, as a user does on a workspace (the endpoint has none of its own)."""
    from local_stack.aml_setup import local_ml_client, register_blob_datastores
    from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    client = local_ml_client(endpoint.url, endpoint.token, endpoint.subscription_id, endpoint.resource_group,
                             endpoint.workspace)
    register_blob_datastores(client, ACCOUNT_NAME, ACCOUNT_KEY, datastores, protocol="http")


def local_call(endpoint, method: str, path: str, body: dict) -> dict:
    """A call to the local endpoint's test controls under /_local/ (signed like every other request)."""
    import json
    import urllib.request

    from azure_compute.hooks.aml import StaticTokenCredential

    token = StaticTokenCredential(endpoint.token).get_token(endpoint.url.rstrip("/") + "/.default").token
    request = urllib.request.Request(f"{endpoint.url.rstrip('/')}{path}", data=json.dumps(body).encode(),
                                     method=method, headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
