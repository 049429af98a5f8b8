"""The Azure ML entry points: ``init()`` loads the model once per worker, ``run(mini_batch)`` scores files.

The parallel driver loads the entry script (``score.py``) and calls these two;
``init()`` reads the model from ``AZUREML_MODEL_DIR`` when set.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .contract import COLUMNS
from .runtime import load_model, require_cuda, resolve_weights
from .scoring import score_paths
from .settings import Settings, build_parser, settings_from_args

if TYPE_CHECKING:
    import pandas


_aml_model: Any = None
_aml_settings: Settings | None = None


def init() -> None:
    """Azure ML entry: load the model once per worker process."""
    global _aml_model, _aml_settings
    env = dict(os.environ)
    args, _driver_args = build_parser(env, for_aml=True).parse_known_args(sys.argv[1:])
    settings = settings_from_args(args)
    if args.require_cuda:
        require_cuda(settings.device, settings.weights)
    model_dir = env.get("AZUREML_MODEL_DIR")
    weights = resolve_weights(model_dir, prefer=settings.weights) if model_dir else settings.weights
    _aml_settings = replace(settings, weights=weights)
    _aml_model = load_model(weights, settings.device, settings.imgsz)


def run(mini_batch: list[str]) -> pandas.DataFrame:
    """Azure ML entry: rows (``COLUMNS``) for every file of the mini batch."""
    import pandas as pd

    if _aml_model is None or _aml_settings is None:
        raise RuntimeError("init() must be called before run()")
    if not isinstance(mini_batch, (list, tuple)):
        raise TypeError(f"run() expects a list of file paths, got {type(mini_batch).__name__}")
    rows = list(score_paths(_aml_model, mini_batch, _aml_settings))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # Whole numbers stay whole next to the blanks of empty/error rows (not 0.0 / NaN floats).
    return frame.astype({"class_id": "Int64", "image_width": "Int64", "image_height": "Int64"})
