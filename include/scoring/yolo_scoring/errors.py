"""The two failures of a run, and messages safe to print: the SAS token never appears in one.

``ScoringError`` stops the run (exit 1 on the command line); ``ImageError``
turns one input into an error row and the run goes on.
"""
from __future__ import annotations

import os
import urllib.parse

SAS_ENV = "SCORING_SAS_TOKEN"


class ScoringError(Exception):
    """The run cannot happen or cannot go on (bad setting, weights, output, storage)."""


class ImageError(Exception):
    """One input cannot be scored; it becomes an error row and the run goes on."""


def sas_query() -> str:
    return os.environ.get(SAS_ENV, "").strip().lstrip("?")


def redact(text: str) -> str:
    """Remove the SAS token (and its signature) from a message."""
    sas = sas_query()
    if sas:
        text = text.replace(sas, "***")
        for key, value in urllib.parse.parse_qsl(sas):
            if key == "sig" and value:
                text = text.replace(value, "***").replace(urllib.parse.quote(value, safe=""), "***")
    return text


def one_line(exc: object) -> str:
    """An exception (or reason) as one redacted line."""
    text = str(exc) or type(exc).__name__
    return redact(" ".join(text.split()))
