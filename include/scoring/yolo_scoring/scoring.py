"""The scoring loop: decode ahead in threads, run batches through the detector, rows per input in order."""
from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from PIL import Image

from .contract import STATUS_EMPTY, STATUS_OK, Row, error_row
from .decode import Decoded, load_item
from .device_decode import EncodedJpeg, decode_jpegs_on_device, load_item_for_device
from .errors import ImageError, one_line
from .inputs import Item, item_for_aml_file
from .runtime import Boxes, Detector
from .settings import Settings


def _detection_rows(item: Item, decoded: Decoded, boxes: Boxes, names: dict[int, str]) -> list[Row]:
    """Rows for one image's detections, boxes mapped back to original pixels."""
    if len(boxes.conf) == 0:
        return [(item.name, STATUS_EMPTY, None, None, None, None, None, None, None, decoded.width, decoded.height, None)]
    height_px, width_px = decoded.pixels.shape[:2]
    sx, sy = decoded.width / width_px, decoded.height / height_px
    rows = []
    for (x1, y1, x2, y2), conf, cls in zip(boxes.xyxy, boxes.conf, boxes.cls):
        rows.append((
            item.name, STATUS_OK, int(cls), str(names[int(cls)]), round(float(conf), 4),
            round(min(max(x1 * sx, 0.0), decoded.width), 2), round(min(max(y1 * sy, 0.0), decoded.height), 2),
            round(min(max(x2 * sx, 0.0), decoded.width), 2), round(min(max(y2 * sy, 0.0), decoded.height), 2),
            decoded.width, decoded.height, None,
        ))
    return rows


def _infer(detector: Detector, batch: list[tuple[Item, Decoded]], settings: Settings) -> list[list[Row]]:
    """Rows per image of the batch; if a whole batch fails, retry its images one by one."""
    try:
        found = detector.detect([decoded.pixels for _, decoded in batch], settings.conf)
        return [_detection_rows(item, decoded, boxes, detector.names) for (item, decoded), boxes in zip(batch, found)]
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        if len(batch) == 1:
            return [[error_row(batch[0][0].name, f"inference failed: {one_line(exc)}")]]
    return [_infer(detector, [pair], settings)[0] for pair in batch]


def _score_pending(
    detector: Detector, pending: list[tuple[Item, Decoded | EncodedJpeg | str]], settings: Settings
) -> Iterator[list[Row]]:
    """Run the decoded images of pending through the model; yield every item's rows in order."""
    waiting = [index for index, (_, got) in enumerate(pending) if isinstance(got, EncodedJpeg)]
    if waiting:
        done = decode_jpegs_on_device([pending[index][1] for index in waiting], settings.imgsz,
                                      settings.max_pixels, _decode_device(detector))
        pending = list(pending)
        for index, got in zip(waiting, done):
            pending[index] = (pending[index][0], got)
    batch = [(item, got) for item, got in pending if isinstance(got, Decoded)]
    scored = iter(_infer(detector, batch, settings) if batch else [])
    for item, got in pending:
        yield next(scored) if isinstance(got, Decoded) else [error_row(item.name, got)]


def score_items(detector: Detector, items: Iterable[Item], settings: Settings) -> Iterator[list[Row]]:
    """Yield the rows of each input, in input order.

    Decoding and downloads run ahead in a thread pool (a bounded queue, so
    memory stays bounded however many items there are) while the model runs
    batches of ``settings.batch_size`` images.
    """
    _configure_pillow(settings.max_pixels)
    prefetch = settings.batch_size * 2 + settings.workers
    max_pending = settings.batch_size * 64  # also flush long runs of error rows
    load = load_item_for_device if settings.decode_on_device else load_item
    source = iter(items)
    queue: deque[tuple[Item, Future[Decoded | EncodedJpeg]]] = deque()
    # decoded image, a JPEG for the device, or the reason it is an error row
    pending: list[tuple[Item, Decoded | EncodedJpeg | str]] = []
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="decode") as pool:
        try:
            exhausted = False
            while True:
                while not exhausted and len(queue) < prefetch:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        queue.append((item, pool.submit(load, item, settings.imgsz, settings.max_pixels)))
                if not queue:
                    break
                item, future = queue.popleft()
                try:
                    pending.append((item, future.result()))
                except ImageError as exc:
                    pending.append((item, str(exc)))
                images = sum(isinstance(got, (Decoded, EncodedJpeg)) for _, got in pending)
                if images >= settings.batch_size or len(pending) >= max_pending:
                    yield from _score_pending(detector, pending, settings)
                    pending = []
            yield from _score_pending(detector, pending, settings)
        finally:
            for _, future in queue:
                future.cancel()


def _decode_device(detector: Detector) -> str:
    """Where device decode runs: the model's CUDA device, else the CPU (torchvision's own decoder)."""
    return detector.device if str(detector.device).startswith("cuda") else "cpu"


def score_paths(
    detector: Detector, paths: Iterable[str | os.PathLike[str]], settings: Settings | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Iterator[Row]:
    """Rows for local image files (image = path relative to root, else the file name)."""
    settings = settings or Settings()
    root_text = str(root) if root is not None else settings.root
    items = (item_for_aml_file(path, root_text) for path in paths)
    for rows in score_items(detector, items, settings):
        yield from rows


def _configure_pillow(max_pixels: int) -> None:
    # Pillow raises DecompressionBombError above twice this; we reject above it ourselves.
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
