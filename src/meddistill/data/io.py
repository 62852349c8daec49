"""Strict reading and writing of fundus photos and binary masks.

Every format the public retinal datasets ship is read: TIFF (DRIVE, HRF), GIF (DRIVE),
JPEG (CHASE_DB1, HRF), PNG, BMP and PPM, also gzipped (STARE ships ``.ppm.gz``).
Inputs the models cannot use as they are (grayscale, alpha, 16-bit) raise
:class:`~meddistill.errors.MeddistillError` instead of being converted silently,
because a silent conversion changes what the network sees.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from ..errors import MeddistillError

__all__ = ["IMAGE_SUFFIXES", "read_grey", "read_mask", "read_rgb", "write_png"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm", ".pbm", ".bmp")
"""Lower-case suffixes :func:`read_rgb` and :func:`read_mask` accept, each also with ``.gz``."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _inner_suffix(path: Path) -> str:
    """The format suffix, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MeddistillError(f"file not found: {path}")
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise MeddistillError(f"cannot read {path}: corrupt gzip file ({err})") from None
    return data


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to its stored array, (H, W) or (H, W, C), and its bits per sample; no conversion."""
    suffix = _inner_suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise MeddistillError(
            f"cannot read {path}: unsupported file type '{suffix or path.name}' "
            f"(use one of {', '.join(IMAGE_SUFFIXES)}, optionally gzipped)"
        )
    data = _read_bytes(path)
    try:
        if suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                array = tif.pages[0].asarray()
                if tif.pages[0].planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                    array = np.moveaxis(array, 0, -1)
        else:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # full decode now, so truncated files fail here and not later
                if image.mode == "CMYK":
                    raise MeddistillError(f"{path} is a CMYK image; save it as RGB")
                if image.mode in ("P", "PA"):  # palette expansion is lossless
                    image = image.convert("RGBA" if image.mode == "PA" else "RGB")
                array = np.asarray(image)
    except MeddistillError:
        raise
    except UnidentifiedImageError:
        raise MeddistillError(f"cannot read {path}: not a valid {suffix.lstrip('.').upper()} image") from None
    except Exception as err:  # decoders raise many types for damaged files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MeddistillError(f"cannot read {path}: corrupt or truncated image ({reason})") from None
    # Pillow reduces 16-bit colour PNGs to 8 bits on load; the header keeps the stored depth.
    if data.startswith(_PNG_SIGNATURE) and data[24] == 16:
        return array, 16
    return array, 8 * array.dtype.itemsize


def _check_depth(array: np.ndarray, bits: int, path: Path, advice: str) -> None:
    if bits == 8 and array.dtype in (np.uint8, np.bool_):
        return
    if np.issubdtype(array.dtype, np.floating):
        raise MeddistillError(f"{path} has {array.dtype} pixels; {advice}")
    raise MeddistillError(f"{path} is {bits}-bit; {advice}")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an 8-bit colour photo as a (H, W, 3) uint8 array.

    Raises:
        MeddistillError: if the file is missing, corrupt, grayscale, has an alpha channel or
            is not 8-bit.
    """
    path = Path(path)
    array, bits = _decode(path)
    _check_depth(array, bits, path, "convert it to 8-bit RGB")
    if array.ndim == 2 or array.shape[-1] in (1, 2):
        raise MeddistillError(
            f"{path} is a single-channel (grayscale) image; fundus photos must be RGB colour images"
        )
    if array.shape[-1] == 4:
        raise MeddistillError(f"{path} has an alpha channel; save it as RGB")
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise MeddistillError(f"{path} has an unsupported pixel layout {array.shape}; save it as 8-bit RGB")
    return np.ascontiguousarray(array)


def read_grey(path: str | Path) -> np.ndarray:
    """Read an 8-bit single-channel image (e.g. an exported CT slice) as a (H, W) uint8 array."""
    path = Path(path)
    array, bits = _decode(path)
    _check_depth(array, bits, path, "save it as an 8-bit grey image")
    if array.ndim != 2:
        raise MeddistillError(f"{path} has {array.shape[-1]} channels; a grey slice must have one")
    return np.ascontiguousarray(array.astype(np.uint8))


def read_mask(
    path: str | Path,
    like_shape: tuple[int, ...] | None = None,
    like_path: str | Path | None = None,
) -> np.ndarray:
    """Read a binary mask (vessels or field of view) as a (H, W) bool array.

    1-bit, 8-bit single-channel and RGB masks are accepted; an RGB pixel is foreground when
    any channel is. 0/1 data is thresholded at > 0, 0/255 data at > 127 (which also cleans
    JPEG-like noise around edges).

    Args:
        path: the mask file.
        like_shape: shape of the image the mask belongs to, (H, W) or (H, W, C); the mask
            must have the same H and W.
        like_path: that image's file, only used to name it in the error message.

    Raises:
        MeddistillError: if the file is missing, corrupt, not 8-bit, has an alpha channel,
            or its size differs from ``like_shape``.
    """
    path = Path(path)
    array, bits = _decode(path)
    _check_depth(array, bits, path, "save it as an 8-bit mask")
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):
            raise MeddistillError(f"mask {path} has an alpha channel; save it without one")
        array = array.max(axis=-1)
    if array.dtype == np.bool_:
        mask = array
    else:
        mask = array > (0 if array.max() <= 1 else 127)
    if like_shape is not None and tuple(mask.shape) != tuple(like_shape[:2]):
        h, w = mask.shape
        image = f"image {like_path}" if like_path is not None else "the image"
        raise MeddistillError(f"mask {path} is {w}x{h} but {image} is {like_shape[1]}x{like_shape[0]}")
    return np.ascontiguousarray(mask)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a (H, W) or (H, W, 3) uint8 array, or a (H, W) bool mask as 0/255, to a PNG file.

    Parent folders are created.
    """
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"write_png needs (H, W) or (H, W, 3) uint8 or bool, got {array.dtype} {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
