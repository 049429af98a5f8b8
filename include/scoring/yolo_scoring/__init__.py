"""The YOLOv8 scoring script as a small package, shipped to a node as one artifact.

Every backend runs this code: Azure Batch tasks run the command line
(``python3 score.pyz --images ... --output ...``, the zipapp built by
``include/scoring/artifact.py``), Azure ML's parallel driver loads the entry
script ``include/scoring/score.py`` and calls its ``init()`` / ``run(mini_batch)``.
It needs only ultralytics, torch, numpy, pandas, Pillow, OpenCV, the standard
library and (for OpenVINO weights) openvino: what a node's runtime installs.

One concern per module, imported in this order (each only uses those above it):

- ``contract``: CSV columns, statuses, image suffixes, error rows, the OpenVINO
  export rule; stdlib only, also imported by the merge (``include.monthly.schema``).
- ``errors``: ``ScoringError`` (stops the run), ``ImageError`` (one error row), redaction.
- ``inputs``: ``Item``s from a folder, a manifest or Azure ML's file list.
- ``settings``: env vars and arguments into ``Settings``.
- ``runtime``: weights, device, the Ultralytics and OpenVINO detectors.
- ``reading``: file bytes, and blobs through a retrying HTTP client.
- ``decode`` / ``device_decode``: bytes to model input, on the CPU or the model's device.
- ``scoring``: the loop (decode ahead, batches, rows per input in order).
- ``output``: the CSV written atomically, run counts.
- ``cli`` / ``aml``: the two entry points.

The command line, its settings and its output are documented in
``include/scoring/score.py``.
"""
