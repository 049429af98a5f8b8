"""The product as a user drives it: Airflow's own UI in a real headless Chromium, against a real
``airflow standalone`` (login on, scheduler, triggerer) on the local stack.

Chromium is Debian's ``chromium`` package (``make test`` installs it); Playwright drives it
through ``executable_path`` and never downloads a browser. Each step's screenshot is kept under
``.local/test-artifacts/ui/`` (a failing step leaves ``*-failed.png`` there too).
"""
from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from local_stack.demo.backfill import LOCK_ATTEMPTS
from local_stack.demo.airflow_stack import AirflowAPI, admin_password, start_standalone, stop_standalone
from local_stack.demo.seed import seed_month
from local_stack.processes import free_port
from include.monthly.layout import parse_month
from include.monthly.publish import load_published

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / ".local" / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAG = "monthly_detection"
# Fake but well-formed ids: the portal links then name the account, pool and job.
SUBSCRIPTION, RESOURCE_GROUP = "00000000-0000-0000-0000-000000000000", "rg-monthly-local"
# Months after the DAG's start date (2024-01), apart from those of the other scheduler tests.
TRIGGER_MONTH, BACKFILL_MONTHS = "2024-10", ("2024-11", "2024-12")


@pytest.fixture(scope="module")
def ui_airflow(tmp_path_factory, standalone_env, storage):
    """``airflow standalone`` with its login on, the local stack's connections (with portal ids) and small shards."""
    env = {key: value for key, value in standalone_env.items() if key != "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"}
    batch = json.loads(env["AIRFLOW_CONN_AZURE_BATCH_DEFAULT"])
    batch["extra"] = {**batch.get("extra", {}), "subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP}
    env.update({"AIRFLOW_CONN_AZURE_BATCH_DEFAULT": json.dumps(batch), "MONTHLY_DETECTION_SHARD_SIZE": "2"})
    seed_month(storage, "images", parse_month(TRIGGER_MONTH), count=3)
    for month in BACKFILL_MONTHS:
        seed_month(storage, "images", parse_month(month), count=1)
    state_dir = tmp_path_factory.mktemp("airflow-ui")
    try:
        api = start_standalone(state_dir, port=free_port(), env=env, timeout=300)
        api.password = admin_password(Path(env["AIRFLOW_HOME"]))
        assert api.password, "airflow standalone generated no admin password: is the login off?"
        api.wait_for_dag(DAG)
        yield api
    finally:
        stop_standalone(state_dir)


@pytest.fixture(scope="module")
def browser_page(ui_airflow):
    """A logged-in page of a fresh headless Chromium profile; screenshots go to ARTIFACTS."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`; "
                    "`make test` does it) or set CHROMIUM to the executable")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        # A shared 2-core machine: the API server may take a while to serve the UI bundle.
        context.set_default_timeout(60_000)
        context.set_default_navigation_timeout(180_000)
        page = context.new_page()
        page.goto(ui_airflow.base_url + "/")
        page.wait_for_url(re.compile(r"/auth/login"))
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ui_airflow.password)
        shot(page, "01-login")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
        try:
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def step(browser_page, request):
    """Leaves a screenshot of the page as it was when a test failed."""
    yield browser_page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        shot(browser_page, f"{request.node.name}-failed")


def open_trigger_dialog(page, base_url: str):
    page.goto(f"{base_url}/dags/{DAG}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.locator("[role=dialog][data-state=open]").last
    dialog.wait_for()
    return dialog


def submit(page, dialog, button: str, endpoint: str, name: str):
    """Click the dialog's submit button; again when SQLite was busy, as a user would.

    The local Airflow runs on SQLite, which refuses a write while the scheduler writes
    (503 "Database is locked" for a backfill, 500 "Database error" for a run); nothing was
    created then (`make backfill` retries the CLI the same way). Returns the last response.
    """
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        with page.expect_response(lambda r: r.url.endswith(endpoint) and r.request.method == "POST") as posted:
            if attempt == 1:
                dialog.get_by_role("button", name=button).click()
            else:  # the failure's notification may cover the button: press it from the keyboard
                dialog.get_by_role("button", name=button).press("Enter")
        response = posted.value
        busy = response.status in (500, 503) and re.search(r"(?i)database (is locked|error)", response.text())
        if not busy or attempt == LOCK_ATTEMPTS:
            return response
        shot(page, f"{name}-sqlite-busy-{attempt}")
        page.wait_for_timeout(2000 * attempt)
    raise AssertionError("the last attempt returns")


def run_url(base_url: str, run_id: str) -> str:
    return f"{base_url}/dags/{DAG}/runs/{urllib.parse.quote(run_id, safe='')}"


def xcom(api: AirflowAPI, run_id: str, task_id: str, key: str):
    path = (f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{key}?deserialize=true")
    return api._request("GET", path)["value"]


def extra_link(page, base_url: str, run_id: str, task_id: str, name: str) -> str:
    """The href of a task's extra link button, as the task's Details tab shows it."""
    page.goto(f"{run_url(base_url, run_id)}/tasks/{task_id}/details")
    page.get_by_text("Extra Links").wait_for()
    link = page.get_by_role("link", name=name)
    link.wait_for()
    return link.get_attribute("href") or ""


def test_the_trigger_form_accepts_the_default_month_and_refuses_a_bad_one_naming_it(step, ui_airflow):
    page, base = step, ui_airflow.base_url
    dialog = open_trigger_dialog(page, base)
    trigger = dialog.get_by_role("button", name="Trigger")
    month = dialog.locator("#element_month")
    assert month.input_value() == ""
    assert trigger.is_enabled(), "with month empty (the default: the run's data interval) Trigger must be possible"
    shot(page, "02-trigger-form-default")
    runs_before = len(ui_airflow.runs(DAG, run_type="manual"))
    month.fill("2024-13")
    with page.expect_response(lambda r: r.url.endswith(f"/dags/{DAG}/dagRuns") and r.request.method == "POST") as posted:
        trigger.click()
    assert posted.value.status == 400
    error = dialog.get_by_text(re.compile(r"param month"))
    error.wait_for()
    assert "2024-13" in error.inner_text()
    shot(page, "03-bad-month-refused")
    assert len(ui_airflow.runs(DAG, run_type="manual")) == runs_before  # nothing was started

    # The default, submitted from a fresh form: the run processes the month of its data interval.
    dialog = open_trigger_dialog(page, base)
    assert dialog.locator("#element_month").input_value() == ""
    posted = submit(page, dialog, "Trigger", f"/dags/{DAG}/dagRuns", "03b-trigger-default")
    assert posted.status == 200, posted.text()
    run = posted.json()
    assert run["conf"].get("month") is None
    states = ui_airflow.wait_for_runs(DAG, [run["dag_run_id"]], timeout=600)
    assert states[run["dag_run_id"]] == "success"
    interval_start = ui_airflow.run(DAG, run["dag_run_id"])["data_interval_start"]
    assert xcom(ui_airflow, run["dag_run_id"], "validate", "month") == interval_start[:7]


def test_a_month_triggered_from_the_form_runs_to_success_with_its_log_and_links(step, ui_airflow, storage):
    page, base, api = step, ui_airflow.base_url, ui_airflow
    dialog = open_trigger_dialog(page, base)
    dialog.locator("#element_month").fill(TRIGGER_MONTH)
    posted = submit(page, dialog, "Trigger", f"/dags/{DAG}/dagRuns", "04-trigger")
    assert posted.status == 200, posted.text()
    run_id = posted.json()["dag_run_id"]
    page.get_by_text("Dag Run Triggered").first.wait_for()
    shot(page, "04-triggered")

    states = api.wait_for_runs(DAG, [run_id], timeout=900)
    page.goto(run_url(base, run_id))
    page.get_by_text(run_id).first.wait_for()
    page.get_by_text("Success", exact=True).first.wait_for()
    shot(page, "05-run-success-in-grid")
    assert states[run_id] == "success"

    # The wait task's log: it deferred, and the triggerer logged the job's progress.
    page.goto(f"{run_url(base, run_id)}/tasks/wait")
    page.get_by_text(re.compile(r"tasks done")).first.wait_for()
    log_text = page.locator("body").inner_text()
    shot(page, "06-wait-log")
    assert re.search(r"trigger .*wait.* starting", log_text), "no line from the triggerer in the wait log"
    assert re.search(r"\d+/\d+ tasks done", log_text)

    # The pool link carries this run's pool; a job has no portal page of its own (it is not an ARM
    # resource), so the wait's link opens the account that lists it; the report link this month's report.
    pool_id = xcom(api, run_id, "validate", "pool_id")
    job_link = extra_link(page, base, run_id, "wait", "Azure Batch account (jobs)")
    shot(page, "07-wait-job-link")
    pool_link = extra_link(page, base, run_id, "ensure_pool", "Azure Batch pool")
    shot(page, "08-ensure-pool-link")
    report_link = extra_link(page, base, run_id, "publish", "Monthly report")
    shot(page, "09-publish-report-link")
    account = (f"https://portal.azure.com/#@/resource/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
               "/providers/Microsoft.Batch/batchAccounts/")
    assert pool_link.startswith(account) and pool_link.endswith(f"/pools/{pool_id}"), pool_link
    assert job_link == pool_link[: -len(f"/pools/{pool_id}")], (job_link, pool_link)
    month = parse_month(TRIGGER_MONTH)
    assert report_link.endswith(f"/predictions/{month.key}/report.html") and "sig=" not in report_link, report_link
    published = load_published(storage.get_container_client("predictions"), month)
    assert published.summary["run_id"] == run_id and published.report


def test_a_backfill_of_two_months_from_the_backfill_dialog_completes_both(step, ui_airflow, storage):
    page, base, api = step, ui_airflow.base_url, ui_airflow
    months = [parse_month(m) for m in BACKFILL_MONTHS]
    dialog = open_trigger_dialog(page, base)
    dialog.get_by_text("Backfill", exact=True).click()
    last_day = calendar.monthrange(months[1].year, months[1].month)[1]
    for index, day in enumerate((f"{months[0].year}/{months[0].month:02d}/01",
                                 f"{months[1].year}/{months[1].month:02d}/{last_day:02d}")):
        dialog.get_by_test_id("datetime-input").nth(index).click()
        picker = page.locator("[data-scope=popover][data-part=content][data-state=open]").last
        picker.get_by_placeholder("YYYY/MM/DD").fill(day)
        picker.get_by_placeholder("HH:mm").fill("00:00")
        page.keyboard.press("Escape")
    dialog.get_by_text("2 runs will be triggered").wait_for()
    dialog.locator("input[name=max_active_runs]").fill("2")
    shot(page, "10-backfill-dialog")
    posted = submit(page, dialog, "Run Backfill", "/backfills", "10-backfill")
    assert posted.status == 200, posted.text()

    runs = [r for r in api.runs(DAG, run_type="backfill")]
    assert len(runs) == 2, runs
    states = api.wait_for_runs(DAG, [r["dag_run_id"] for r in runs], timeout=900)
    page.goto(f"{base}/dags/{DAG}/backfills")
    page.get_by_text(re.compile(rf"{months[0].year}-{months[0].month:02d}-01")).first.wait_for()
    shot(page, "11-backfills-tab")
    page.goto(f"{base}/dags/{DAG}/runs")
    page.get_by_text("backfill", exact=False).first.wait_for()
    shot(page, "12-backfill-runs")
    assert set(states.values()) == {"success"}, states
    for month in months:
        summary = load_published(storage.get_container_client("predictions"), month).summary
        assert summary["month"] == str(month) and summary["images"] == 2  # one image and the corrupt sample
