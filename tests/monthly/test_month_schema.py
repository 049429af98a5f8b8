"""The merge's schema is the one the scoring script writes: both import the scoring contract."""
from __future__ import annotations

from pathlib import Path

from include.monthly.schema import PREDICTION_COLUMNS, error_row, redact
from include.scoring.yolo_scoring import contract


def test_the_scorer_and_the_merge_share_one_contract() -> None:
    """One definition: the scoring package writes the columns the merge reads (no copy to keep in step)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include" / "scoring"))
    from yolo_scoring import output

    assert PREDICTION_COLUMNS is contract.COLUMNS
    assert output.COLUMNS == contract.COLUMNS and sys.modules["yolo_scoring.contract"].__file__ == contract.__file__


def test_error_row_keeps_image_and_reason_but_not_secrets() -> None:
    row = error_row("202401/a b.jpg", "403 on https://x.blob.core.windows.net/c/a?sv=1&sig=abc%2Fdef&se=2")
    assert len(row) == len(PREDICTION_COLUMNS)
    assert row[0] == "202401/a b.jpg" and row[1] == "error"
    assert "sig=***" in row[-1] and "abc%2Fdef" not in row[-1]
    assert "AccountKey=***" in redact("DefaultEndpointsProtocol=http;AccountKey=s3cr3t==;BlobEndpoint=x")
