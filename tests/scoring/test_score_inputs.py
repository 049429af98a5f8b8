"""Manifests, the Azure ML init/run contract, and the runs that must not happen.

Everything goes through the script's real entry points (main, init, run) with
real weights; nothing is mocked.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from scoring_helpers import read_csv, rows_by_image


def run_main(score: ModuleType, weights: Path, *args: str) -> int:
    return score.main([*args, "--weights", str(weights), "--device", "cpu", "--workers", "2"])


# --------------------------------------------------------------------------- manifests


def test_manifest_rows_follow_its_lines_and_unsafe_lines_are_never_opened(
    score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.jpg"  # a real image just outside the root: must not be scored
    outside.write_bytes((zoo / "photos" / "bus.jpg").read_bytes())
    lines = [
        "photos/bus.jpg",
        "",
        "../outside.jpg",
        str(outside),
        "photos/../photos/zidane.jpg",
        "   ",
        "notes.txt",
        "photos/missing.jpg",
        "odd/deeper",
        "formats/UPPER CASE.JPEG",
    ]
    manifest = zoo.parent / "manifest-with-traps.txt"
    manifest.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert run_main(score, weights_path, "--images", str(manifest), "--root", str(zoo), "--output", str(out)) == 0
    rows = rows_by_image(read_csv(out)[1])
    assert list(rows) == [line for line in lines if line.strip()]
    assert rows["photos/bus.jpg"][0]["status"] == "ok"
    assert rows["formats/UPPER CASE.JPEG"][0]["status"] == "ok"
    reasons = {name: group[0]["error"] for name, group in rows.items() if group[0]["status"] == "error"}
    assert "escapes the root" in reasons["../outside.jpg"]
    assert "escapes the root" in reasons["photos/../photos/zidane.jpg"]
    assert "absolute path" in reasons[str(outside)]
    assert "not an image" in reasons["notes.txt"]  # a text file is never read as a list of more files
    assert reasons["photos/missing.jpg"] == "file not found"
    assert "directory" in reasons["odd/deeper"]
    assert "8 images (2 ok, 0 empty, 6 error)" in capsys.readouterr().err


def test_manifest_root_defaults_to_the_manifest_folder(
    score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path
) -> None:
    manifest = zoo / "photos-only.txt"
    manifest.write_text("photos/zidane.jpg\n")
    out = tmp_path / "out.csv"
    assert run_main(score, weights_path, "--images", str(manifest), "--output", str(out)) == 0
    [name] = rows_by_image(read_csv(out)[1])
    assert name == "photos/zidane.jpg"
    assert "tie" in [row["class_name"] for row in read_csv(out)[1]]


def test_items_are_streamed_not_read_up_front(score: ModuleType, detector, zoo: Path) -> None:
    """A huge manifest is consumed only as far as the scored output demands."""
    consumed = 0

    def endless_manifest():
        nonlocal consumed
        while True:
            consumed += 1
            yield "photos/bus.jpg\n"

    settings = score.Settings(device="cpu", batch_size=2, workers=1)
    scored = score.score_items(detector, score.iter_manifest(endless_manifest(), str(zoo)), settings)
    first = next(scored)
    assert first[0][0] == "photos/bus.jpg"
    assert consumed <= settings.batch_size * 2 + settings.workers + 1
    scored.close()


# --------------------------------------------------------------------------- Azure ML contract


@pytest.fixture
def aml_model_dir(tmp_path: Path, weights_path: Path) -> Path:
    """A registered-model folder as Azure ML mounts it: weights nested below AZUREML_MODEL_DIR."""
    folder = tmp_path / "model" / "yolov8n" / "1"
    folder.mkdir(parents=True)
    (folder / "yolov8n.pt").symlink_to(weights_path)
    (folder / "README.md").write_text("not weights")
    return tmp_path / "model"


def test_init_and_run_with_a_model_folder_and_driver_arguments(
    score: ModuleType, zoo: Path, aml_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(aml_model_dir))
    monkeypatch.setenv("YOLO_WEIGHTS", "/nonexistent/ignored-when-model-dir-is-set.pt")
    monkeypatch.setenv("SCORING_DEVICE", "cpu")
    # Azure ML's driver puts its own arguments next to our program_arguments.
    monkeypatch.setattr(sys, "argv", [
        "driver/amlbi_main.py", "--mini_batch_size", "4", "--conf", "0.5", "--root", str(zoo),
        "--output", "/mnt/out", "--logging_level", "INFO",
    ])
    score.init()
    mini_batch = [str(zoo / "photos" / "bus.jpg"), str(zoo / "bad" / "corrupt.png"), str(zoo / "odd" / "deeper" / "blank.png")]
    frame = score.run(mini_batch)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(score.COLUMNS)
    assert list(dict.fromkeys(frame["image"])) == ["photos/bus.jpg", "bad/corrupt.png", "odd/deeper/blank.png"]
    bus = frame[frame["image"] == "photos/bus.jpg"]
    assert set(bus["status"]) == {"ok"} and "bus" in set(bus["class_name"])
    assert bus["confidence"].min() >= 0.5  # --conf from the program arguments took effect
    assert frame[frame["image"] == "bad/corrupt.png"]["status"].tolist() == ["error"]
    assert frame[frame["image"] == "odd/deeper/blank.png"]["status"].tolist() == ["empty"]
    assert str(frame["class_id"].dtype) == "Int64" and str(frame["image_width"].dtype) == "Int64"


def test_init_with_a_weights_file_and_names_outside_the_root(
    score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(weights_path))
    monkeypatch.setenv("SCORING_DEVICE", "cpu")
    monkeypatch.delenv("SCORING_ROOT", raising=False)
    monkeypatch.setattr(sys, "argv", ["driver.py"])
    score.init()
    frame = score.run([str(zoo / "photos" / "zidane.jpg")])
    assert set(frame["image"]) == {"zidane.jpg"}  # no root known: the file name
    assert {"person", "tie"} <= set(frame["class_name"])


def test_init_fails_clearly_without_weights(
    score: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(empty))
    monkeypatch.setattr(sys, "argv", ["driver.py"])
    with pytest.raises(score.ScoringError, match="no weights .* in .*empty-model"):
        score.init()


# --------------------------------------------------------------------------- runs that cannot happen


def test_missing_weights_fail_with_their_path(
    score: ModuleType, zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.csv"
    missing = tmp_path / "nope" / "best.pt"
    assert score.main(["--images", str(zoo), "--output", str(out), "--weights", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"weights not found: {missing}" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


def test_unreadable_manifest_fails_with_its_path(
    score: ModuleType, weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "no-such-manifest.txt"
    assert run_main(score, weights_path, "--images", str(manifest), "--output", str(tmp_path / "o.csv")) == 1
    assert f"cannot read manifest {manifest}" in capsys.readouterr().err


@pytest.mark.parametrize("make_target", ["under_a_file", "is_a_directory"])
def test_unwritable_output_fails_with_its_path(
    make_target: str, score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "blocker"
    if make_target == "under_a_file":
        blocker.write_text("a file, not a folder")
        out = blocker / "predictions.csv"
    else:
        blocker.mkdir()
        out = blocker
    assert run_main(score, weights_path, "--images", str(zoo), "--output", str(out)) == 1
    assert f"cannot write output {out}" in capsys.readouterr().err


def test_bad_settings_are_named(
    score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = str(tmp_path / "o.csv")
    monkeypatch.setenv("SCORING_BATCH_SIZE", "lots")
    assert run_main(score, weights_path, "--images", str(zoo), "--output", out) == 1
    assert "SCORING_BATCH_SIZE='lots'" in capsys.readouterr().err
    monkeypatch.delenv("SCORING_BATCH_SIZE")
    assert run_main(score, weights_path, "--images", str(zoo), "--output", out, "--conf", "1.5") == 1
    assert "--conf" in capsys.readouterr().err
    assert run_main(score, weights_path, "--images", str(zoo / "photos" / "bus.jpg"), "--output", out) == 1
    assert "is an image" in capsys.readouterr().err
    manifest = tmp_path / "list.txt"
    manifest.write_text("photos/bus.jpg\n")
    assert run_main(score, weights_path, "--images", str(manifest), "--root", str(tmp_path / "nope"), "--output", out) == 1
    assert f"--root {tmp_path / 'nope'} is not a directory" in capsys.readouterr().err
    secret = "sv=2024&sig=TOPSECRET"
    assert run_main(score, weights_path, "--images", str(zoo), "--output", out,
                    "--root", f"http://127.0.0.1:1/c?{secret}") == 1
    err = capsys.readouterr().err
    assert "SCORING_SAS_TOKEN" in err and "TOPSECRET" not in err


def test_a_run_that_fails_midway_leaves_the_previous_csv_untouched(
    score: ModuleType, zoo: Path, weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("previous complete result\n")
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(b"photos/bus.jpg\nphotos/zidane.jpg\n\xff\xfe not utf-8\n")
    code = run_main(score, weights_path, "--images", str(manifest), "--root", str(zoo), "--output", str(out))
    assert code == 1
    assert "not UTF-8" in capsys.readouterr().err
    assert out.read_text() == "previous complete result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt", "predictions.csv"]  # no partial file left
