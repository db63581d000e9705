"""Any image -> a 28×28 Fashion-MNIST-style image, by the dataset's own recipe.

Fashion-MNIST's images are product photos converted by a fixed recipe (Xiao, Rasul and
Vollgraf 2017, section 2): trim the edges that match the background, resize the longest
edge to 28, sharpen, pad the short edge centred to 28×28, negate (garment bright on
black), 8-bit grayscale. A model trained on them has seen nothing else, so a photo must
go through the same steps before it is classified. ``to_fashion_mnist`` does:

  1. decode: first frame, EXIF orientation, palette / 16-bit / CMYK / alpha -> gray levels;
     transparency is composited on the background: the border's colour, or white (the
     product-shot background) when the border itself is transparent, as in a cut-out;
  2. background from the border pixels: a light one means negate, so it becomes black;
  3. levels: background -> 0, brightest pixel -> 255 (a grey-backed or dim photo gets the
     dataset's range; an enlarged Fashion-MNIST image, whose maximum is 255, is unchanged;
     overshoot from JPEG ringing or sharpening halos can leave a garment slightly dimmer);
  4. trim the rows and columns that hold only background (``TRIM_THRESHOLD``: the paper's
     5% would keep the ringing JPEG leaves around a sharp edge, up to ~10% at quality 70);
  5. scale the longest edge to 28 with an antialiasing filter and centre the short edge
     the way the dataset does (see ``_fit``).

The paper subsampled and then sharpened; a proper low-pass filter from a large photo
lands on a similar look without amplifying the photo's noise, so there is no sharpening.

A 28×28 grayscale image with a dark background already *is* in that form and passes
through unchanged: ``to_fashion_mnist(x_test[i])`` is ``x_test[i]``.

``load_image`` reads a file (``decode_image`` bytes, as uploaded to the server) through
Pillow with a pixel-count limit against decompression bombs and turns every failure into
one ``ImageError`` line (``ImageTooLargeError`` for the limit).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fmnist.errors import ImageError, ImageTooLargeError

SIZE = 28  # Fashion-MNIST images are SIZE × SIZE
MAX_PIXELS = 64_000_000  # larger images are refused before decoding: a 50 MP photo fits, a decompression bomb does not
WORK_SIZE = 2048  # larger images are box-reduced to about this long side first (28 pixels need no more)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # what a folder is searched for
BORDER_FRACTION = 0.02  # the background is judged on a frame this thick (at least 1 pixel)
BLANK_CONTRAST = 8.0  # an image whose levels span no more than this is one flat colour: nothing to classify
LIGHT = 127.5  # a background brighter than this is light: the image is negated
TRIM_THRESHOLD = 32.0  # levels above background that count as garment: 1/8 of the range, above JPEG ringing (~10%)
TRIM_MIN_FRACTION = 0.005  # a row or column needs this share of garment pixels (at least 1): specks are not kept
CENTRE_THRESHOLD = 50.0  # the garment's width for centring is measured where a blurred edge is half-way up
PLACE_MIN_SCALE = 4  # crops are placed at >= 4 crop pixels per output pixel (rounding <= 1/8 pixel)
RESAMPLE = Image.Resampling.LANCZOS  # antialiased scaling: no aliasing of stripes, thin straps survive


# --------------------------------------------------------------------------- reading files
def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file: first frame, EXIF orientation applied, fully decoded.

    Any failure (missing, unreadable, empty, truncated, not an image, too many pixels)
    is an ``ImageError`` that names the file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image file.")
        if path.stat().st_size == 0:
            raise ImageError(f"{path} is empty (0 bytes): save or copy the image again.")
        return _decode(path, str(path), max_pixels)
    except FileNotFoundError as e:
        raise ImageError(f"{path} does not exist.") from e
    except PermissionError as e:
        raise ImageError(f"{path} cannot be read: permission denied.") from e


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image array as PNG bytes (what `fmnist predict --save-images` writes and the server returns)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "the image") -> Image.Image:
    """``load_image`` for bytes already in memory (an upload): the same checks, errors naming ``name``."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): send the image file's content.")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int) -> Image.Image:
    """Decode the first frame of ``source`` (a path or file object), upright; failures as ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(source) as im:
                if im.width * im.height > max_pixels:
                    raise ImageTooLargeError(
                        f"{name} is {im.width}×{im.height} = {im.width * im.height:,} pixels, over the limit of "
                        f"{max_pixels:,} (a guard against decompression bombs): scale it down first."
                    )
                im.seek(0)  # the first frame of an animation
                im.draft(None, (WORK_SIZE, WORK_SIZE))  # JPEG: decode at a reduced scale, much faster
                im.load()
                return ImageOps.exif_transpose(im)  # a decoded, upright copy
    except (ImageError, FileNotFoundError, PermissionError):
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image file Pillow can read (PNG, JPEG, WebP, GIF, BMP, TIFF).") from e
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{name} declares too many pixels, a possible decompression bomb ({e}).") from e
    except Exception as e:  # truncated or corrupt data surfaces as OSError, SyntaxError, ValueError, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name} is damaged or truncated ({reason}): save or download it again.") from e


# --------------------------------------------------------------------------- decoding to gray
def _to_pil(image) -> Image.Image:
    """A Pillow image from an Image or an array (H, W) or (H, W, 1|2|3|4).

    Arrays: uint8 as is; uint16 (or other integers above 255) as 16-bit; floats in [0, 1]
    scaled by 255; bool as black and white.
    """
    if isinstance(image, Image.Image):
        return image
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)) or 0 in a.shape:
        raise ImageError(f"an image array must have shape (H, W) or (H, W, 1|2|3|4); got {a.shape}.")
    if a.dtype.kind not in "buif":
        raise ImageError(f"an image array must hold numbers; got dtype {a.dtype}.")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ImageError("the image array holds NaN or infinite values.")
    if a.dtype != np.uint8:
        unit = a.dtype.kind in "fb"
        a = a.astype(np.float32)
        a = np.clip(a * _level_scale(float(a.max()), unit), 0, 255)
        if a.ndim == 2:
            return Image.fromarray(a, "F")  # keeps fractional levels
        a = a.round().astype(np.uint8)
    return Image.fromarray(a, "L" if a.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[-1]])


def _level_scale(top: float, unit: bool) -> float:
    """Factor to 0–255 levels: [0, 1] floats (and bool) x255, 16-bit /257, 8-bit as is."""
    if unit and top <= 1.0:
        return 255.0
    return 1 / 257 if top > 255 else 1.0


def _gray_and_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Gray levels 0–255 and opacity 0–1 (or None) as float32 arrays, for any Pillow mode.

    Images larger than ``WORK_SIZE`` are box-reduced first: the result has 28 pixels.
    """
    mode = im.mode
    alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if mode.startswith("I") or mode == "F":  # 16- and 32-bit integers, floats
        im, alpha = im.convert("F"), False
    elif mode in ("1", "L", "LA", "La"):
        im = im.convert("LA" if alpha else "L")
    else:  # RGB(A), palette, CMYK, YCbCr, LAB, HSV
        im = im.convert("RGBA" if alpha else "RGB")
    factor = math.ceil(max(im.size) / WORK_SIZE)
    if factor > 1:
        im = im.reduce(factor)
    a = np.asarray(im, dtype=np.float32)
    if im.mode == "F":
        return np.clip(a * _level_scale(float(a.max(initial=0.0)), unit=mode == "F"), 0, 255), None
    if a.ndim == 2:
        return a, None
    gray = a[..., 0] if a.shape[-1] == 2 else a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114  # Rec. 601
    return gray, (a[..., -1] / 255.0 if alpha else None)


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of a frame ``BORDER_FRACTION`` of the image thick (at least one pixel)."""
    h, w = a.shape
    t = max(1, round(min(h, w) * BORDER_FRACTION))
    return np.concatenate([a[:t].ravel(), a[-t:].ravel(), a[t:-t, :t].ravel(), a[t:-t, -t:].ravel()])


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency onto the background: the opaque border's colour, else white."""
    opaque = _border(alpha) >= 0.5
    background = float(np.median(_border(gray)[opaque])) if opaque.mean() >= 0.5 else 255.0
    return gray * alpha + background * (1.0 - alpha)


# --------------------------------------------------------------------------- the recipe
def to_fashion_mnist(image) -> np.ndarray:
    """Any image (Pillow Image or array) -> uint8 (28, 28), garment bright on black, centred."""
    im = _to_pil(image)
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    gray, alpha = _gray_and_alpha(im)
    if alpha is not None:
        gray = _composite(gray, alpha)
    background = float(np.median(_border(gray)))
    light = background >= LIGHT
    if light:
        gray, background = 255.0 - gray, 255.0 - background
    top = float(gray.max())
    if top - background <= BLANK_CONTRAST:  # black, white or grey alike, before any shortcut
        raise ImageError("the image is blank (one flat colour): there is no garment to classify.")
    if gray.shape == (SIZE, SIZE) and not light:
        return gray.round().astype(np.uint8)  # already Fashion-MNIST-like: unchanged
    return _fit(np.clip((gray - background) * (255.0 / (top - background)), 0.0, 255.0))


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """First and one-past-last index along ``axis`` whose line holds enough True pixels."""
    other = 1 - axis
    counts = mask.sum(axis=other)
    keep = np.flatnonzero(counts >= max(1, TRIM_MIN_FRACTION * mask.shape[other]))
    if len(keep) == 0:
        keep = np.flatnonzero(counts)
    return int(keep[0]), int(keep[-1]) + 1


def _fit(gray: np.ndarray) -> np.ndarray:
    """Trim the background, scale the longest edge to 28, centre on Fashion-MNIST's grid.

    The dataset pads a short edge of n pixels with ceil((28 - n) / 2) in front, so the
    garment's centre sits at 14 when n is even and at 14.5 when n is odd (measured on
    the training set: 99.8% of images). Placing it the same way keeps an enlarged
    Fashion-MNIST image on its own pixel grid, so the round trip is close to identity;
    n is measured at ``CENTRE_THRESHOLD``, where an enlarged image's blurred edge is
    half-way up, since the faint fringe at ``TRIM_THRESHOLD`` is wider than the garment.
    """
    mask = gray > TRIM_THRESHOLD
    (r0, r1), (c0, c1) = _extent(mask, 0), _extent(mask, 1)
    crop = gray[r0:r1, c0:c1]
    h, w = crop.shape
    if max(h, w) < SIZE * PLACE_MIN_SCALE:  # a small crop: enlarge it first, so placing it rounds to sub-pixels
        k = math.ceil(SIZE * PLACE_MIN_SCALE / max(h, w))
        crop = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize((w * k, h * k), RESAMPLE))
        h, w = crop.shape
    scale = max(h, w) / SIZE  # crop pixels per output pixel
    core = crop > CENTRE_THRESHOLD
    centre = []
    for axis, length in ((0, h), (1, w)):
        lo, hi = _extent(core, axis)
        n = round((hi - lo) / scale)
        centre.append((SIZE / 2 + 0.5 * (n % 2)) * scale - length / 2)  # where the crop's origin goes
    # Paste the crop onto a canvas 28*scale wide with the garment at the dataset's centre, then resize.
    side = round(SIZE * scale)
    canvas = np.zeros((side, side), np.float32)
    top, left = round(centre[0]), round(centre[1])
    t0, l0, b0, r0_ = max(0, top), max(0, left), min(side, top + h), min(side, left + w)
    canvas[t0:b0, l0:r0_] = crop[t0 - top : b0 - top, l0 - left : r0_ - left]
    small = Image.fromarray(canvas, "F").resize((SIZE, SIZE), RESAMPLE)
    return np.clip(np.asarray(small).round(), 0, 255).astype(np.uint8)
