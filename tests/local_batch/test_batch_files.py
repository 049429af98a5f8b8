"""Resource files in and output files out, through Azurite with SAS URLs, as a task on Azure sees them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from azure.batch import models
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_blob_sas, generate_container_sas

from batch_helpers import make_job, read_file, unique, wait_for_tasks
from local_stack.azurite import ACCOUNT_KEY, ACCOUNT_NAME


@pytest.fixture()
def storage(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    inputs = service.create_container(unique("in"))
    outputs = service.create_container(unique("out"))
    expiry = datetime.now(timezone.utc) + timedelta(hours=1)

    def container_sas(name: str, permission: ContainerSasPermissions) -> str:
        token = generate_container_sas(ACCOUNT_NAME, name, account_key=ACCOUNT_KEY, permission=permission, expiry=expiry)
        return f"{azurite.blob_url}/{name}?{token}"

    def blob_sas(container: str, blob: str) -> str:
        token = generate_blob_sas(ACCOUNT_NAME, container, blob, account_key=ACCOUNT_KEY, permission="r", expiry=expiry)
        return f"{azurite.blob_url}/{container}/{blob}?{token}"

    yield {
        "service": service,
        "inputs": inputs,
        "outputs": outputs,
        "read_url": container_sas(inputs.container_name, ContainerSasPermissions(read=True, list=True)),
        "write_url": container_sas(outputs.container_name, ContainerSasPermissions(create=True, write=True)),
        "blob_sas": blob_sas,
    }
    inputs.delete_container()
    outputs.delete_container()


def test_resource_files_from_sas_urls_and_outputs_uploaded_by_pattern(batch, pool, storage):
    inputs, outputs = storage["inputs"], storage["outputs"]
    inputs.upload_blob("202401/a.txt", b"alpha")
    inputs.upload_blob("202401/sub/b.txt", b"beta")
    inputs.upload_blob("202402/c.txt", b"not this month")
    inputs.upload_blob("single.txt", b"one file")
    job_id = make_job(batch, pool)
    script = ("import pathlib; "
              "files = sorted(str(p) for p in pathlib.Path('month').rglob('*.txt')); "
              "pathlib.Path('out').mkdir(); "
              "pathlib.Path('out/listing.csv').write_text(chr(10).join(files)); "
              "pathlib.Path('out/deep').mkdir(); pathlib.Path('out/deep/x.csv').write_text(open('one.txt').read()); "
              "print('done')")
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="files",
        command_line=f'python3 -c "{script}"',
        resource_files=[
            models.ResourceFile(storage_container_url=storage["read_url"], blob_prefix="202401/", file_path="month"),
            models.ResourceFile(http_url=storage["blob_sas"](inputs.container_name, "single.txt"), file_path="one.txt"),
        ],
        output_files=[
            models.OutputFile(
                file_pattern="out/**/*.csv",
                destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(
                    container_url=storage["write_url"], path="results/202401")),
                upload_options=models.OutputFileUploadConfiguration(upload_condition="tasksuccess")),
            models.OutputFile(
                file_pattern="../stdout.txt",
                destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(
                    container_url=storage["write_url"], path="logs/files-stdout.txt")),
                upload_options=models.OutputFileUploadConfiguration(upload_condition="taskcompletion")),
            models.OutputFile(
                file_pattern="../stderr.txt",
                destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(
                    container_url=storage["write_url"], path="logs/only-on-failure.txt")),
                upload_options=models.OutputFileUploadConfiguration(upload_condition="taskfailure")),
        ],
    ))
    wait_for_tasks(batch, job_id, 1)
    task = batch.get_task(job_id, "files")
    assert task.execution_info.result == "success", task.execution_info
    names = sorted(b.name for b in outputs.list_blobs())
    assert names == ["logs/files-stdout.txt", "results/202401/deep/x.csv", "results/202401/listing.csv"]
    assert outputs.download_blob("results/202401/listing.csv").readall().decode() == "month/202401/a.txt\nmonth/202401/sub/b.txt"
    assert outputs.download_blob("results/202401/deep/x.csv").readall() == b"one file"
    assert outputs.download_blob("logs/files-stdout.txt").readall() == b"done\n"
    assert "sig=" not in str(task.as_dict().get("executionInfo")), "SAS tokens never appear in the task record"


def test_failed_task_uploads_only_failure_outputs(batch, pool, storage):
    outputs = storage["outputs"]
    job_id = make_job(batch, pool)

    def output(pattern: str, path: str, condition: str) -> models.OutputFile:
        return models.OutputFile(
            file_pattern=pattern,
            destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(
                container_url=storage["write_url"], path=path)),
            upload_options=models.OutputFileUploadConfiguration(upload_condition=condition))

    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="fails",
        command_line="/bin/bash -c 'echo partial > part.csv; echo boom >&2; exit 3'",
        output_files=[output("*.csv", "success-only", "tasksuccess"),
                      output("../stderr.txt", "failure/stderr.txt", "taskfailure"),
                      output("part.csv", "always/part.csv", "taskcompletion")],
    ))
    wait_for_tasks(batch, job_id, 1)
    assert batch.get_task(job_id, "fails").execution_info.exit_code == 3
    assert sorted(b.name for b in outputs.list_blobs()) == ["always/part.csv", "failure/stderr.txt"]
    assert outputs.download_blob("failure/stderr.txt").readall() == b"boom\n"


def test_upload_without_write_permission_fails_the_task_with_file_upload_error(batch, pool, storage):
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="noperm",
        command_line="/bin/bash -c 'echo x > r.csv'",
        output_files=[models.OutputFile(
            file_pattern="r.csv",
            destination=models.OutputFileDestination(container=models.OutputFileBlobContainerDestination(
                container_url=storage["read_url"], path="r.csv")),
            upload_options=models.OutputFileUploadConfiguration(upload_condition="tasksuccess"))],
    ))
    wait_for_tasks(batch, job_id, 1)
    info = batch.get_task(job_id, "noperm").execution_info
    assert (info.exit_code, info.result) == (0, "failure")
    assert info.failure_info.code == "FileUploadError"
    assert "sig=" not in info.failure_info.message


def test_auto_storage_container_and_a_missing_blob(batch, pool, storage):
    inputs = storage["inputs"]
    inputs.upload_blob("cfg/settings.json", b'{"k": 1}')
    job_id = make_job(batch, pool)
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="auto", command_line="cat cfg/settings.json",
        resource_files=[models.ResourceFile(auto_storage_container_name=inputs.container_name, blob_prefix="cfg/")]))
    batch.create_task(job_id, models.BatchTaskCreateOptions(
        id="missing", command_line="cat nothing.txt",
        resource_files=[models.ResourceFile(http_url=storage["blob_sas"](inputs.container_name, "nope.txt"), file_path="nothing.txt")]))
    wait_for_tasks(batch, job_id, 2)
    assert read_file(batch, job_id, "auto", "stdout.txt") == '{"k": 1}'
    missing = batch.get_task(job_id, "missing").execution_info
    assert missing.result == "failure"
    assert missing.failure_info.code == "BlobNotFound"


def test_resource_file_path_escaping_the_task_directory_is_rejected(batch, pool, storage):
    job_id = make_job(batch, pool)
    with pytest.raises(HttpResponseError) as err:
        batch.create_task(job_id, models.BatchTaskCreateOptions(
            id="escape", command_line="true",
            resource_files=[models.ResourceFile(http_url=storage["blob_sas"]("x", "y"), file_path="../../etc/passwd")]))
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidPropertyValue")
