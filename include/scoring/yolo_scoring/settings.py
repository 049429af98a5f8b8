"""Every setting of a run in one place: environment variables and arguments, validated into ``Settings``.

A command-line argument wins over its environment variable; the Azure ML entry
parses the same arguments with ``parse_known_args`` (the driver's own are ignored).
"""
from __future__ import annotations

import argparse
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .errors import SAS_ENV, ScoringError
from .inputs import is_url

DEFAULT_WEIGHTS = "yolov8n.pt"
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class Settings:
    """Everything that tunes a run; built from env vars and arguments in one place."""

    weights: str = DEFAULT_WEIGHTS
    device: str = "auto"
    batch_size: int = 8
    imgsz: int = 640
    conf: float = 0.25
    workers: int = 4
    max_pixels: int = 100_000_000
    root: str | None = None
    decode_on_device: bool = False


def _default_workers() -> int:
    return max(4, min(16, 2 * _cpu_count()))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _flag(raw: str) -> bool:
    """An on/off environment value: 1/true/yes/on or 0/false/no/off."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _env_value(env: dict[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        kind_name = "on/off value (1 or 0)" if kind is _flag else kind.__name__
        raise ScoringError(f"{name}={raw!r} is not a valid {kind_name}") from None


def build_parser(env: dict[str, str], for_aml: bool = False) -> argparse.ArgumentParser:
    """The argument parser; defaults come from env vars so either way works."""
    parser = argparse.ArgumentParser(
        prog="score.py",
        description="Score images with a YOLOv8 detector into a CSV (one row set per image).",
        allow_abbrev=False,
    )
    if not for_aml:
        parser.add_argument("--images", required=True, help="a directory of images or a manifest file")
        parser.add_argument("--output", required=True, help="CSV file to write")
        parser.add_argument("--summary", action="store_true", help="print detections per class to stdout")
        parser.add_argument("--anonymous", action="store_true",
                            help=f"read a public container from a URL --root without {SAS_ENV}")
    parser.add_argument("--root", default=env.get("SCORING_ROOT") or None,
                        help="root the image names are relative to: a folder or a blob container/folder URL "
                             "(env SCORING_ROOT)")
    parser.add_argument("--weights", default=env.get("YOLO_WEIGHTS") or DEFAULT_WEIGHTS,
                        help="weights file or folder (env YOLO_WEIGHTS)")
    parser.add_argument("--batch-size", type=int, default=_env_value(env, "SCORING_BATCH_SIZE", int, 8),
                        help="images per forward pass (env SCORING_BATCH_SIZE, default 8)")
    parser.add_argument("--device", default=env.get("SCORING_DEVICE") or "auto",
                        help="auto, cpu, cuda:0, ... (env SCORING_DEVICE, default auto)")
    parser.add_argument("--imgsz", type=int, default=_env_value(env, "SCORING_IMGSZ", int, 640),
                        help="inference size in pixels (env SCORING_IMGSZ, default 640)")
    parser.add_argument("--conf", type=float, default=_env_value(env, "SCORING_CONF", float, 0.25),
                        help="confidence threshold (env SCORING_CONF, default 0.25)")
    parser.add_argument("--workers", type=int, default=_env_value(env, "SCORING_WORKERS", int, _default_workers()),
                        help="decode/download threads (env SCORING_WORKERS)")
    parser.add_argument("--decode-on-device", action="store_true",
                        default=_env_value(env, "SCORING_DECODE_ON_DEVICE", _flag, False),
                        help="decode JPEGs in batches on the model's device (nvJPEG on CUDA; "
                             "env SCORING_DECODE_ON_DEVICE=1)")
    parser.add_argument("--max-pixels", type=int, default=_env_value(env, "SCORING_MAX_PIXELS", int, 100_000_000),
                        help="larger images are error rows (env SCORING_MAX_PIXELS, default 100000000)")
    parser.add_argument("--require-cuda", action="store_true",
                        default=env.get("SCORING_REQUIRE_CUDA", "").lower() in ("1", "true", "yes"),
                        help="fail at once unless a CUDA GPU scores the images (GPU VM sizes; env SCORING_REQUIRE_CUDA)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate parsed arguments into Settings, naming the bad one."""
    if args.batch_size < 1:
        raise ScoringError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.imgsz < 32:
        raise ScoringError(f"--imgsz must be at least 32, got {args.imgsz}")
    if not 0.0 < args.conf <= 1.0:
        raise ScoringError(f"--conf must be in (0, 1], got {args.conf}")
    if args.workers < 1:
        raise ScoringError(f"--workers must be at least 1, got {args.workers}")
    if args.max_pixels < 1:
        raise ScoringError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    root = args.root
    if root and is_url(root) and urllib.parse.urlsplit(root).query:
        # Never echo the value: it may hold a SAS token.
        raise ScoringError(f"--root must not contain a query string; put the SAS token in {SAS_ENV}")
    return Settings(
        weights=str(args.weights), device=args.device, batch_size=args.batch_size, imgsz=args.imgsz,
        conf=args.conf, workers=args.workers, max_pixels=args.max_pixels, root=root,
        decode_on_device=bool(args.decode_on_device),
    )
