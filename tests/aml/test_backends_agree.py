"""The same month scored through backend=batch and backend=aml gives the same predictions.csv
(after sorting), from the same DAG, the same scoring script and the same weights."""
from __future__ import annotations

import csv
import io
import json
import secrets

import pytest
from azure.storage.blob import BlobServiceClient

from local_stack.demo.seed import seed_month
from local_stack.aml_service.aml_endpoint import start_aml_service, stop_aml_service
from local_stack.processes import free_port
from include.monthly.layout import parse_month
from include.monthly.publish import load_published

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monthly_dag_overrides() -> dict[str, str]:
    """A price for the tests' CPU VM size (not in the default table), so the month's cost is stated."""
    return {"MONTHLY_DETECTION_VM_PRICES": '{"Standard_D2s_v3": {"spot": 0.02, "dedicated": 0.1}}'}


@pytest.fixture(scope="module")
def product_aml(tmp_path_factory, azurite):
    """A local Azure ML endpoint with the product's datastores registered, as `make local-up` leaves it."""
    from aml_helpers import register_datastores
    from include.monthly.config import DagConfig

    state_dir = tmp_path_factory.mktemp("aml-product")
    endpoint = start_aml_service(state_dir, free_port(), azurite.connection_string, secrets.token_urlsafe(16))
    register_datastores(endpoint, DagConfig.from_env().aml_datastores())  # what `make local-up` does
    yield endpoint
    stop_aml_service(state_dir)


@pytest.fixture(scope="module", autouse=True)
def aml_connection(product_aml):
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_CONN_AZURE_ML_DEFAULT", json.dumps(product_aml.connection()))
    yield
    mp.undo()


def published_rows(storage: BlobServiceClient, month) -> tuple[list[dict], dict]:
    published = load_published(storage.get_container_client("predictions"), month)
    rows = list(csv.DictReader(io.StringIO(published.predictions.decode("utf-8"))))
    key = lambda r: (r["image"], r["status"], r["class_name"], float(r["confidence"] or 0))  # noqa: E731
    return sorted(rows, key=key), published.summary


def raw_aml_output(storage: BlobServiceClient, run) -> bytes:
    """The append_row file of the run's Azure ML job, as the driver left it."""
    location = run.get_task_instance("submit").xcom_pull(task_ids="submit", key="predictions")
    return storage.get_container_client(location["container"]).download_blob(location["path"]).readall()


def test_batch_and_aml_backends_give_the_same_detections(monthly_dag, storage, capfd, product_aml):
    """Also with a mini-batch that ran twice (its worker died after appending): each image counted once."""
    from aml_helpers import local_call

    month = parse_month("2024-04")
    seed_month(storage, "images", month, count=6)

    results = {}
    raw = {}
    for backend in ("batch", "aml", "aml-rerun"):
        if backend == "aml-rerun":
            local_call(product_aml, "PUT", "/_local/faults", {"rerun_after_append": True})
        run = monthly_dag.test(run_conf={"month": str(month), "backend": backend.split("-")[0]})
        out, err = capfd.readouterr()
        if str(run.state) != "success":
            print(out + err)
        assert str(run.state) == "success", backend
        results[backend] = published_rows(storage, month)
        # Only a Batch run describes Batch tasks (and uploads the scoring zipapp for them).
        built = run.get_task_instance("build_tasks").state
        assert str(built) == ("success" if backend == "batch" else "skipped"), (backend, built)
        if backend != "batch":
            raw[backend] = raw_aml_output(storage, run)

    # The raw append_row output is the driver's: space-separated, no header, 12 fields a row.
    for backend, data in raw.items():
        lines = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter=" "))
        assert lines and all(len(line) == 12 for line in lines) and lines[0][0] != "image", backend
    assert len(raw["aml-rerun"].splitlines()) > len(raw["aml"].splitlines())  # the re-run's rows are in there twice

    batch_rows, batch_summary = results["batch"]
    for backend in ("aml", "aml-rerun"):
        aml_rows, aml_summary = results[backend]
        assert len(batch_rows) == len(aml_rows) > 7, backend
        for ours, theirs in zip(batch_rows, aml_rows):
            assert (ours["image"], ours["status"], ours["class_id"], ours["class_name"]) == \
                   (theirs["image"], theirs["status"], theirs["class_id"], theirs["class_name"]), backend
            if ours["status"] == "ok":
                for column in ("confidence", "x1", "y1", "x2", "y2"):
                    assert float(ours[column]) == pytest.approx(float(theirs[column]), abs=0.02), column
        for key in ("images", "detections_per_class", "status_counts", "skipped"):
            assert batch_summary[key] == aml_summary[key], (backend, key)
        # The month's Azure ML node time and cost come from the job's run-history record.
        compute = aml_summary["compute"]
        assert compute["backend"] == "aml" and compute["node_time_seconds"] > 0, (backend, compute)
        assert compute["cost"] is not None and compute["cost"] > 0, (backend, compute)
        assert "run history" in compute["basis"], (backend, compute)


def test_an_openvino_export_folder_scores_the_month_on_both_backends(
    monthly_dag, storage, capfd, openvino_weights_path, tmp_path
):
    """weights=<*_openvino_model folder>: staged as a folder, run by score.py's OpenVINO runtime on either backend."""
    from include.scoring import score

    month = parse_month("2024-05")
    seed_month(storage, "images", month, count=4)
    results = {}
    for backend in ("batch", "aml"):
        run = monthly_dag.test(run_conf={"month": str(month), "backend": backend,
                                         "weights": str(openvino_weights_path)})
        out, err = capfd.readouterr()
        assert str(run.state) == "success", (backend, (out + err)[-4000:])
        results[backend] = published_rows(storage, month)[0]

    # What the OpenVINO runtime gives for the same images, scored here.
    images = storage.get_container_client("images")
    files = []
    for blob in images.list_blobs(name_starts_with=month.prefix):
        if blob.name.endswith(".jpg"):
            target = tmp_path / blob.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(images.download_blob(blob.name).readall())
            files.append(target)
    detector = score.load_model(openvino_weights_path, "cpu")
    local = [row for row in score.score_paths(detector, files, score.Settings(batch_size=4), root=tmp_path)
             if row[1] == "ok"]
    assert len(local) > 5
    expected = sorted((row[0], row[3], row[4]) for row in local)
    for backend, rows in results.items():
        got = sorted((r["image"], r["class_name"], float(r["confidence"])) for r in rows if r["status"] == "ok")
        assert [(image, name) for image, name, _ in got] == [(image, name) for image, name, _ in expected], backend
        assert [conf for *_, conf in got] == pytest.approx([conf for *_, conf in expected], abs=1e-3), backend
