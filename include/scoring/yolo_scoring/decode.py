"""Image bytes to model input on the CPU: only as an image, EXIF-oriented, shrunk to the model size."""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any

import cv2  # OpenCV comes with ultralytics
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, one_line
from .inputs import Item
from .reading import read_bytes

# Only these decoders ever see a file: no EPS (Ghostscript), no exotic parsers.
# (Pillow's JPEG decoder also returns multi-picture "MPO" camera files.)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")


@dataclass
class Decoded:
    """An image ready for the model: BGR pixels, possibly shrunk, plus the original size."""

    pixels: np.ndarray
    width: int   # original width after EXIF orientation
    height: int  # original height after EXIF orientation


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled down, alpha composited on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        peak = float(values.max()) if values.size else 0.0
        if mode.startswith("I;16") or peak > 255.0:
            values = values / 257.0  # 16-bit range to 8-bit
        elif mode == "F" and peak <= 1.0:
            values = values * 255.0  # float image in 0..1
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _pillow_open() -> Any:
    """Pillow's own Image.open.

    Ultralytics replaces Image.open with a wrapper that, on an unknown file,
    tries to pip-install a HEIF plugin; an unknown file here is just an error row.
    """
    opener = Image.open
    if opener.__module__ != Image.__name__:
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener


def decode(data: bytes, imgsz: int, max_pixels: int) -> Decoded:
    """Decode image bytes (only as an image), orient by EXIF, shrink to the model size.

    Shrinking here, in a decode thread, keeps queued images small and lets JPEGs
    decode at reduced scale; boxes are mapped back to the original size later.
    """
    try:
        image = _pillow_open()(io.BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (over {max_pixels} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - a hostile header may raise anything
        raise ImageError(f"corrupt image: {one_line(exc)}") from None
    try:
        raw_w, raw_h = image.size
        if raw_w < 1 or raw_h < 1:
            raise ImageError(f"invalid image size {raw_w}x{raw_h}")
        if raw_w * raw_h > max_pixels:
            raise ImageError(f"image too large ({raw_w}x{raw_h} pixels, limit {max_pixels})")
        scale = min(1.0, imgsz / max(raw_w, raw_h))
        target = (max(1, round(raw_w * scale)), max(1, round(raw_h * scale)))
        if scale < 1.0 and image.format in ("JPEG", "MPO"):
            image.draft(None, target)  # decode at 1/2, 1/4 or 1/8 scale, never below target
        image.load()
        loaded_size = image.size
        ImageOps.exif_transpose(image, in_place=True)  # copies nothing when there is nothing to turn
        turned = image.size != loaded_size  # a 90/270-degree orientation swaps the axes
        width, height = (raw_h, raw_w) if turned else (raw_w, raw_h)
        rgb = np.asarray(_to_rgb(image))
        if max(rgb.shape[:2]) > imgsz:
            # OpenCV's area filter: antialiased like Pillow's, at less than half its cost on a CPU.
            ratio = imgsz / max(rgb.shape[:2])
            size = (max(1, round(rgb.shape[1] * ratio)), max(1, round(rgb.shape[0] * ratio)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # Ultralytics takes BGR
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (over {max_pixels} pixels)") from None
    except MemoryError:
        raise ImageError("image too large to decode in memory") from None
    except OSError as exc:  # Pillow's way of saying the data is bad
        message = one_line(exc)
        if "truncated" in message:
            raise ImageError(f"truncated image: {message}") from None
        raise ImageError(f"corrupt image: {message}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an unsupported colour mode
        raise ImageError(f"cannot decode image: {one_line(exc)}") from None
    return Decoded(pixels=pixels, width=width, height=height)


def load_item(item: Item, imgsz: int, max_pixels: int) -> Decoded:
    """Read and decode one input; ImageError for a bad one, ScoringError to stop the run."""
    if item.error:
        raise ImageError(item.error)
    return decode(read_bytes(item), imgsz, max_pixels)
