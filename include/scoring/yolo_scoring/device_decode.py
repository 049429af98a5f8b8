"""JPEG decode on the model's device (nvJPEG on CUDA) in batches, falling back to the CPU path."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from .decode import Decoded, _pillow_open, decode
from .errors import ImageError
from .inputs import Item
from .reading import read_bytes


# --------------------------------------------------------------------------- decode on the model's device
#
# On a GPU node the CPUs, not the GPU, bound the rate: entropy-decoding JPEGs is
# most of their work (docs/performance.md). torchvision.io.decode_jpeg decodes a
# list of JPEGs on a CUDA device with nvJPEG in one call; the decode threads then
# only download and read each header. Its limits, and what this path does:
# it decodes at full size (no reduced-scale draft), so the image is shrunk on
# the device (area filter, like OpenCV's INTER_AREA); it applies no EXIF
# orientation on CUDA, so the orientation read from the header is applied on
# the device; a failing call returns nothing for the whole list, so a failed
# batch is retried image by image and an image that still fails takes the CPU
# path (which names the problem in its error row). Images that are not plain
# JPEGs (PNG, CMYK JPEG, too many pixels) never leave the CPU path. The same
# code runs on the CPU device (torchvision's libjpeg-turbo), which is how it is
# tested without a GPU. Off by default until make bench-gpu has measured it.


@dataclass
class EncodedJpeg:
    """A JPEG whose header was read in a decode thread, waiting to be decoded with its batch."""

    data: bytes
    orientation: int  # EXIF orientation 1..8 (1: as stored)


def load_item_for_device(item: Item, imgsz: int, max_pixels: int) -> Decoded | EncodedJpeg:
    """Read one input; a plain (RGB or grey) JPEG is left encoded for the device, anything else decoded here."""
    if item.error:
        raise ImageError(item.error)
    data = read_bytes(item)
    if data[:3] == b"\xff\xd8\xff":
        try:
            with _pillow_open()(io.BytesIO(data), formats=("JPEG",)) as header:  # reads the header only
                width, height = header.size
                if header.mode in ("RGB", "L") and 0 < width * height <= max_pixels:
                    return EncodedJpeg(data, int(header.getexif().get(0x0112, 1) or 1))
        except Exception:  # noqa: BLE001 - let the CPU path name what is wrong
            pass
    return decode(data, imgsz, max_pixels)


def _orient(tensor: Any, orientation: int) -> Any:
    """A (3, H, W) tensor turned as EXIF orientation says (Pillow's exif_transpose, on the device)."""
    import torch

    if orientation == 2:
        return tensor.flip(2)
    if orientation == 3:
        return tensor.flip(1).flip(2)
    if orientation == 4:
        return tensor.flip(1)
    if orientation == 5:
        return tensor.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(tensor, -1, (1, 2))
    if orientation == 7:
        return tensor.transpose(1, 2).flip(1).flip(2)
    if orientation == 8:
        return torch.rot90(tensor, 1, (1, 2))
    return tensor


def _shrunk(tensor: Any, imgsz: int) -> Decoded:
    """A decoded (3, H, W) uint8 RGB tensor, oriented, to BGR pixels at most imgsz on the long side."""
    import torch

    height, width = tensor.shape[1:]
    if max(height, width) > imgsz:
        ratio = imgsz / max(height, width)
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        tensor = torch.nn.functional.interpolate(tensor[None].float(), size=size, mode="area")[0]
        tensor = tensor.round_().clamp_(0, 255).to(torch.uint8)
    pixels = tensor.flip(0).permute(1, 2, 0).contiguous().cpu().numpy()  # RGB to BGR, HWC
    return Decoded(pixels=pixels, width=int(width), height=int(height))


def decode_jpegs_on_device(jpegs: list[EncodedJpeg], imgsz: int, max_pixels: int, device: str) -> list[Decoded | str]:
    """Decode JPEGs in one torchvision call on `device`; per image on failure, then the CPU path.

    Returns, per input, its Decoded image or the reason it is an error row.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def tensors(group: list[EncodedJpeg]) -> list[Any]:
        return [torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8) for jpeg in group]

    try:
        decoded: list[Any | None] = list(decode_jpeg(tensors(jpegs), mode=ImageReadMode.RGB, device=device))
    except Exception:  # noqa: BLE001 - one bad JPEG fails the whole call: find it image by image
        decoded = []
        for jpeg in jpegs:
            try:
                decoded.append(decode_jpeg(tensors([jpeg]), mode=ImageReadMode.RGB, device=device)[0])
            except Exception:  # noqa: BLE001 - the CPU path decodes it or names the problem
                decoded.append(None)
    results: list[Decoded | str] = []
    for jpeg, tensor in zip(jpegs, decoded):
        try:
            if tensor is None:
                raise ValueError("not decodable on the device")
            results.append(_shrunk(_orient(tensor, jpeg.orientation), imgsz))
        except Exception:  # noqa: BLE001 - e.g. out of device memory for a huge image
            try:
                results.append(decode(jpeg.data, imgsz, max_pixels))
            except ImageError as exc:
                results.append(str(exc))
    return results
