"""The command line (``python3 score.py`` or ``score.pyz --images ... --output ...``): inputs, the run, exit status.

Messages keep the prefix ``score.py:`` whichever file runs (users and tests read it).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .contract import is_image_name
from .errors import SAS_ENV, ScoringError, sas_query, redact
from .inputs import Item, is_url, iter_directory, iter_manifest, open_manifest
from .output import CsvOutput, RunStats
from .runtime import load_model, require_cuda
from .scoring import score_items
from .settings import EXIT_FAILED, EXIT_OK, Settings, build_parser, settings_from_args


PROGRESS_EVERY = 1000  # images between progress lines on stderr


def _cli_items(args: argparse.Namespace, settings: Settings) -> tuple[Iterable[Item], io.TextIOWrapper | None]:
    """The inputs named by --images/--root, and the open manifest (if any) to close afterwards."""
    images = Path(args.images)
    remote = bool(settings.root and is_url(settings.root))
    if remote and not sas_query() and not args.anonymous:
        # Azure answers anonymous reads of a private container with 404s: fail now, not with 10,000 error rows.
        raise ScoringError(f"{SAS_ENV} is not set; it is needed to read from a URL --root (or pass --anonymous)")
    if images.is_dir():
        if remote:
            raise ScoringError("--images must be a manifest file when --root is a URL")
        if not settings.root:
            return iter_directory(images), None
        root = Path(settings.root).resolve()
        if not images.resolve().is_relative_to(root):
            raise ScoringError(f"--images {images} is not inside --root {settings.root}")
        return iter_directory(images.resolve(), root), None
    if is_image_name(images.name) and images.is_file():
        raise ScoringError(f"--images {images} is an image; pass a directory or a manifest (text file)")
    if settings.root and not remote and not Path(settings.root).is_dir():
        raise ScoringError(f"--root {settings.root} is not a directory")
    manifest = open_manifest(images)
    root_text = settings.root or str(images.parent)
    return iter_manifest(manifest, root_text, source=f"manifest {images}"), manifest


def run_cli(args: argparse.Namespace, settings: Settings) -> RunStats:
    """Score the inputs named by the command line into the output CSV."""
    items, manifest = _cli_items(args, settings)
    stats = RunStats()
    try:
        output = CsvOutput(Path(args.output))
        try:
            detector = load_model(settings.weights, settings.device, settings.imgsz)
            started = time.monotonic()
            for rows in score_items(detector, items, settings):
                output.write(rows)
                stats.add(rows)
                if stats.images % PROGRESS_EVERY == 0:
                    print(f"score.py: progress: {stats.line()}", file=sys.stderr, flush=True)
            output.commit()
        except BaseException:
            output.abort()
            raise
    finally:
        if manifest is not None:
            manifest.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"score.py: {stats.line()} in {elapsed:.1f} s ({stats.images / elapsed:.2f} images/s) -> {args.output}",
        file=sys.stderr,
    )
    return stats


def print_class_summary(stats: RunStats, output: str) -> None:
    """Detections per class, most frequent first, and where the CSV is."""
    print(f"Detections per class ({stats.images} images, {stats.statuses['error']} unreadable):")
    for name, count in stats.classes.most_common():
        print(f"  {name:<20} {count:>6}")
    if not stats.classes:
        print("  (none)")
    print(f"CSV: {Path(output).resolve()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    try:
        parser = build_parser(dict(os.environ))
        args = parser.parse_args(argv)
        settings = settings_from_args(args)
        if args.require_cuda:
            require_cuda(settings.device, settings.weights)
        stats = run_cli(args, settings)
    except ScoringError as exc:
        print(f"score.py: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("score.py: interrupted; no output written", file=sys.stderr)
        return 130
    if args.summary:
        print_class_summary(stats, args.output)
    return EXIT_OK
