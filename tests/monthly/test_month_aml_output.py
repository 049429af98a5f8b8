"""Azure ML's append_row file as the parallel run driver writes it, read back and merged (real Azurite).

The driver appends each run()'s DataFrame with to_csv(sep=" ", header=None, index=None) to a
per-process temp file and concatenates them; a mini-batch whose worker died after appending
runs again, so its images' rows appear twice. Every value must round-trip and every image's
rows must be published exactly once.
"""
from __future__ import annotations

import csv

import pandas as pd
from monthly_testdata import rows_for_image, upload_names

from include.monthly.aml_results import appended_rows, split_into_shards
from include.monthly.layout import parse_month, run_key
from include.monthly.merge import merge_shards
from include.monthly.schema import PREDICTION_COLUMNS
from include.monthly.staging import stage_month

MONTH = parse_month("2024-01")
# Names a comma or naive space reader breaks; the month prefix is what staging gives back.
NAMES = ["cam 0/img 000.jpg", "comma,name.jpg", 'q"uote.jpg', "ünïcode ✓.jpg", "plain.jpg", "tab\tname.jpg"]


def driver_bytes(frames: list[pd.DataFrame]) -> bytes:
    """What the driver leaves: each frame appended with the driver's own to_csv call, concatenated."""
    return "".join(frame.to_csv(sep=" ", header=None, index=None) for frame in frames).encode("utf-8")


def frame(rows: list[list[str]]) -> pd.DataFrame:
    """A run() result as score.py returns it: numbers typed, blanks as NA."""
    df = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)).replace("", None)
    for column in ("class_id", "image_width", "image_height"):
        df[column] = pd.to_numeric(df[column]).astype("Int64")
    for column in ("confidence", "x1", "y1", "x2", "y2"):
        df[column] = pd.to_numeric(df[column])
    df["error"] = df["error"].fillna("")  # an empty string stays an empty field too
    return df


def run(containers, tmp_path, frames: list[pd.DataFrame]):
    upload_names(containers.input, [f"202401/{name}" for name in NAMES])
    stage = stage_month(containers.input, containers.work, MONTH, run_key("aml-out"), shard_size=4)
    containers.work.upload_blob("aml/predictions.csv", driver_bytes(frames), overwrite=True)
    report = split_into_shards(containers.work, stage, appended_rows(containers.work, "aml/predictions.csv"))
    out = tmp_path / "predictions.csv"
    merged = merge_shards(containers.work, stage, out)
    with open(out, newline="", encoding="utf-8") as handle:
        return report, merged, list(csv.reader(handle))[1:]


def test_every_value_of_the_drivers_format_round_trips(containers, tmp_path):
    per_image = {name: rows_for_image(name, i) for i, name in enumerate(NAMES)}
    per_image["plain.jpg"][0][-1] = 'an error, with "quotes" and a\nline break'
    frames = [frame([row for n in NAMES[:3] for row in per_image[n]]),
              frame([row for n in NAMES[3:] for row in per_image[n]])]
    report, merged, rows = run(containers, tmp_path, frames)
    assert report.duplicate_rows == 0
    expected = {f"202401/{name}": [[f"202401/{name}", *row[1:]] for row in rows_] for name, rows_ in per_image.items()}
    got: dict[str, list[list[str]]] = {}
    for row in rows:
        got.setdefault(row[0], []).append(row)
    assert set(got) == set(expected)
    for image, want in expected.items():
        for ours, theirs in zip(got[image], want, strict=True):
            assert ours[:4] == theirs[:4] and ours[9:] == theirs[9:], image  # text, ints, blanks, the error
            for a, b in zip(ours[4:9], theirs[4:9]):
                assert (float(a) if a else None) == (float(b) if b else None), image


def test_a_mini_batch_that_ran_twice_is_published_once(containers, tmp_path):
    per_image = {name: rows_for_image(name, i) for i, name in enumerate(NAMES)}
    first = frame([row for n in NAMES[:2] for row in per_image[n]])   # appended, then the node was pre-empted
    second = frame([row for n in NAMES[2:] for row in per_image[n]])
    again = frame([row for n in NAMES[:2] for row in per_image[n]])   # the same mini batch, run again
    report, merged, rows = run(containers, tmp_path, [first, second, again, again])
    doubled = sum(len(per_image[n]) for n in NAMES[:2])
    assert report.duplicate_rows == 2 * doubled
    assert merged.images == len(NAMES) and merged.rows == sum(len(r) for r in per_image.values())
    assert sorted(r[0] for r in rows) == sorted(f"202401/{n}" for n, rs in per_image.items() for _ in rs)


def test_a_rerun_back_to_back_in_one_process_file_is_published_once(containers, tmp_path):
    per_image = {name: rows_for_image(name, i) for i, name in enumerate(NAMES)}
    batch = frame([row for row in per_image[NAMES[1]]])  # one image, its mini batch run twice in a row
    rest = frame([row for n in NAMES if n != NAMES[1] for row in per_image[n]])
    report, merged, rows = run(containers, tmp_path, [batch, batch, rest])
    assert report.duplicate_rows == len(per_image[NAMES[1]])
    got = [r for r in rows if r[0] == f"202401/{NAMES[1]}"]
    assert [(r[3], float(r[4])) for r in got] == [(r[3], float(r[4])) for r in per_image[NAMES[1]]]
