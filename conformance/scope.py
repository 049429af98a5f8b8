"""Which of the SDK suite's tests are out of scope for the local service, and why."""
from __future__ import annotations

OUT_OF_SCOPE: dict[str, str] = {
    "test_batch_job_schedules": "job schedules are not implemented (Job Schedule API)",
    "test_batch_network_configuration": "network configuration (endpoint configuration, public IPs) is not implemented",
    "test_batch_compute_node_extensions": "VM extensions are not implemented",
    "test_batch_compute_node_user": "node user accounts (add/update/delete user) are not implemented",
    "test_batch_compute_node_remote_desktop": "remote login settings / remote desktop are not implemented",
}


def reason_out_of_scope(test_name: str) -> str | None:
    """The reason a test (name without its [sync]/[async] id) is out of scope, or None."""
    return OUT_OF_SCOPE.get(test_name.split("[")[0])
