"""The merge's schema must be the one the scoring script writes (it ships alone, with its own copy)."""
from __future__ import annotations

import ast
from pathlib import Path

from include.monthly.schema import PREDICTION_COLUMNS, error_row, redact

SCORE_PY = Path(__file__).resolve().parents[2] / "include" / "scoring" / "score.py"


def _score_py_constant(name: str) -> object:
    tree = ast.parse(SCORE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SCORE_PY} defines no {name}")


def test_scorer_writes_the_columns_the_merge_expects() -> None:
    assert tuple(_score_py_constant("COLUMNS")) == PREDICTION_COLUMNS


def test_error_row_keeps_image_and_reason_but_not_secrets() -> None:
    row = error_row("202401/a b.jpg", "403 on https://x.blob.core.windows.net/c/a?sv=1&sig=abc%2Fdef&se=2")
    assert len(row) == len(PREDICTION_COLUMNS)
    assert row[0] == "202401/a b.jpg" and row[1] == "error"
    assert "sig=***" in row[-1] and "abc%2Fdef" not in row[-1]
    assert "AccountKey=***" in redact("DefaultEndpointsProtocol=http;AccountKey=s3cr3t==;BlobEndpoint=x")
