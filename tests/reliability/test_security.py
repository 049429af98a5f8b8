"""Security of a monthly run on the local stack: refused credentials, least-privilege expiring SAS,
no secret in logs, XCom or rendered fields, non-admin tasks, loopback-only services."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import psutil
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from local_stack.demo.seed import seed_month
from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from include.monthly.config import DagConfig
from include.monthly.layout import parse_month
from reliability_helpers import run_month

pytestmark = pytest.mark.slow
MONTH = parse_month("2025-09")
WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


@pytest.fixture(scope="module")
def secured_run(monthly_dag, storage, local_batch, capfd_module):
    """One scored month; what its Batch tasks received and what Airflow recorded."""
    seed_month(storage, "images", MONTH, count=2)
    state, states, log, run_id = run_month(monthly_dag, capfd_module, str(MONTH))
    assert state == "success", log[-4000:]
    client = local_batch.client()
    (job,) = [j for j in client.list_jobs() if j.id.startswith(f"monthly-detection-{MONTH.key}-")]
    tasks = list(client.list_tasks(job.id))
    return {"log": log, "run_id": run_id, "job": job, "tasks": tasks}


@pytest.fixture(scope="module")
def capfd_module(request):
    """A module-scoped stand-in for capfd: reads pytest's global output capture."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    class Capture:
        def readouterr(self) -> tuple[str, str]:
            return capman.read_global_capture()

    Capture().readouterr()  # start empty
    return Capture()


def _sas_of(url_or_token: str) -> dict[str, str]:
    query = url_or_token.split("?", 1)[1] if "?" in url_or_token else url_or_token
    return dict(urllib.parse.parse_qsl(query))


def _task_sas(task) -> dict[str, list[dict[str, str]]]:
    env = {s.name: s.value for s in task.environment_settings or []}
    return {
        "input": [_sas_of(env["SCORING_SAS_TOKEN"])],
        "resource": [_sas_of(r.http_url) for r in task.resource_files or []],
        "output": [_sas_of(o.destination.container.container_url) for o in task.output_files or []],
    }


def test_sas_tokens_are_least_privilege_and_expire_with_the_job_time_limit(secured_run):
    limit = timedelta(seconds=DagConfig().job_timeout_s)
    for task in secured_run["tasks"]:
        sas = _task_sas(task)
        assert {s["sp"] for s in sas["input"] + sas["resource"]} == {"rl"}, task.id  # read + list
        assert {s["sp"] for s in sas["output"]} == {"cw"}, task.id                   # create + write
        for token in sas["input"] + sas["resource"] + sas["output"]:
            expiry = datetime.strptime(token["se"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            created = task.creation_time
            assert abs(expiry - (created + limit)) < timedelta(minutes=5), (task.id, token["se"], created)


def test_a_read_sas_cannot_write_and_a_write_sas_cannot_read_or_list(secured_run, azurite):
    task = secured_run["tasks"][0]
    env = {s.name: s.value for s in task.environment_settings}
    read = ContainerClient.from_container_url(f"{azurite.blob_url}/images?{env['SCORING_SAS_TOKEN']}")
    assert any(b.name.startswith(MONTH.prefix) for b in read.list_blobs(name_starts_with=MONTH.prefix))
    with pytest.raises(HttpResponseError) as refused:
        read.upload_blob(f"{MONTH.prefix}planted.jpg", b"x")
    assert refused.value.status_code == 403

    write_url = task.output_files[0].destination.container.container_url
    write = ContainerClient.from_container_url(write_url)
    write.upload_blob("runs/sas-probe.txt", b"written with the task's write SAS", overwrite=True)
    with pytest.raises(HttpResponseError) as no_list:
        list(write.list_blobs())
    assert no_list.value.status_code == 403
    with pytest.raises(HttpResponseError) as no_read:
        write.download_blob("runs/sas-probe.txt").readall()
    assert no_read.value.status_code == 403


def test_no_key_or_sas_signature_reaches_logs_xcom_or_rendered_fields(secured_run, local_batch):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    signatures = {s["sig"] for task in secured_run["tasks"] for group in _task_sas(task).values() for s in group}
    assert signatures  # the tasks did get signed tokens ...
    secrets = {ACCOUNT_KEY, local_batch.key} | signatures | {urllib.parse.quote(s, safe="") for s in signatures}
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id == secured_run["run_id"])).all()
        rendered = session.scalars(select(RenderedTaskInstanceFields)
                                   .where(RenderedTaskInstanceFields.run_id == secured_run["run_id"])).all()
    assert xcoms and rendered
    places = {
        "task log": secured_run["log"],
        "xcom": json.dumps([x.value for x in xcoms], default=str),
        "rendered fields": json.dumps([r.rendered_fields for r in rendered], default=str),
        "local Batch service log": "".join(p.read_text(errors="replace") for p in local_batch.state_dir.glob("*.log")),
    }
    assert places["local Batch service log"] and len(places["task log"]) > 10_000  # there was something to scan
    for where, text in places.items():
        leaked = [secret[:6] + "..." for secret in secrets if secret in text]
        assert not leaked, f"secret(s) {leaked} found in the {where}"
        assert not re.search(r"sig=[A-Za-z0-9%+/=]{20,}", text), f"a SAS signature in the {where}"


def test_scoring_tasks_run_as_a_non_admin_auto_user(secured_run, local_batch):
    for task in secured_run["tasks"]:
        auto_user = task.user_identity.auto_user
        assert auto_user.elevation_level == "nonadmin" and auto_user.scope == "task", task.id
        assert task.user_identity.username is None, task.id


@pytest.fixture
def wrong_batch_key(batch_connections, local_batch, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_BATCH_WRONG_KEY", json.dumps({
        "conn_type": "azure_batch", "login": local_batch.account, "password": WRONG_KEY,
        "extra": {"account_url": local_batch.url},
    }))
    local_batch.emulator("DELETE", "requests")
    return "azure_batch_wrong_key"


def test_a_wrong_batch_key_is_a_clear_authentication_error_without_retries(wrong_batch_key, local_batch):
    from azure_compute.hooks.batch import BatchHook

    with pytest.raises(HttpResponseError) as refused:
        BatchHook(azure_batch_conn_id=wrong_batch_key).get_pool("any-pool")
    assert refused.value.status_code == 403 and "AuthenticationFailed" in str(refused.value)
    assert local_batch.emulator("GET", "requests") == {"Pool_Get": 1}  # one request, no retry


def test_a_wrong_batch_key_ends_a_deferred_wait_at_the_first_poll(wrong_batch_key, local_batch):
    from azure_compute.triggers.batch import AzureBatchJobTrigger

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event(AzureBatchJobTrigger("any-job", 1, wrong_batch_key, 0.2, time.time() + 60)))
    assert event["status"] == "error" and "AuthenticationFailed" in event["message"], event
    assert local_batch.emulator("GET", "requests") == {"Job_GetTaskCounts": 1}


def test_a_wrong_storage_key_is_a_clear_authentication_error_without_retries(blob_proxy, batch_connections, monkeypatch):
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from include.monthly.staging import stage_month

    monkeypatch.setenv("AIRFLOW_CONN_WASB_WRONG_KEY", json.dumps({
        "conn_type": "wasb", "extra": {"connection_string": blob_proxy.connection_string(ACCOUNT_NAME, WRONG_KEY)},
    }))
    blob_proxy.faults.reset_counts()
    service = WasbHook(wasb_conn_id="wasb_wrong_key").get_conn()
    with pytest.raises(HttpResponseError) as refused:  # Azure: 403 AuthenticationFailed; Azurite: AuthorizationFailure
        stage_month(service.get_container_client("images"), service.get_container_client("work"), MONTH, "probe", 2)
    assert refused.value.status_code == 403 and "failed to authenticate" in str(refused.value)
    assert sum(blob_proxy.faults.request_counts().values()) == 1  # refused once, not retried


def test_the_local_services_listen_on_loopback_only(local_batch, azurite, blob_proxy):
    ports = {urllib.parse.urlsplit(azurite.blob_url).port, local_batch.port, blob_proxy.port}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    ours = [c for c in listening if c.laddr.port in ports]
    assert {c.laddr.port for c in ours} == ports
    assert {c.laddr.ip for c in ours} <= {"127.0.0.1", "::1"}, ours
    # and every socket the Batch service or Azurite process listens on
    for pid in {c.pid for c in ours if c.pid}:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                assert conn.laddr.ip in ("127.0.0.1", "::1"), (psutil.Process(pid).name(), conn)
