"""fmnist.images: every listed image kind reaches the same 28×28 input; bad files are one ImageError.

A synthetic "garment" (a dark, striped, asymmetric shape on a light background, off-centre)
is written in each format with Pillow; each must convert to (nearly) the same 28×28 image
as the in-memory original. Lossless kinds must match closely, lossy ones loosely.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from fmnist import images
from fmnist.errors import ImageError

BG, DARK, STRIPE = 235, 40, 120  # levels of the synthetic photo: light background, dark garment, a lighter stripe
LOSSLESS_MAE = 2.0  # mean |difference| in gray levels allowed for lossless formats (palette rounding, luma)
LOSSY_CORRELATION = 0.97  # lossy formats: same picture; ringing may dim it a little (the brightest pixel sets 255)


def garment_mask(h: int = 240, w: int = 180, dx: int = 0, dy: int = 0) -> Image.Image:
    """A boot-like asymmetric shape (255) with a stripe (128) on 0, placed off-centre by (dx, dy)."""
    m = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(m)
    ox, oy = 20 + dx, 30 + dy
    d.polygon(
        [(ox, oy), (ox + 60, oy), (ox + 60, oy + 110), (ox + 130, oy + 140), (ox + 130, oy + 170), (ox, oy + 170)],
        fill=255,
    )
    d.rectangle([ox + 10, oy + 40, ox + 50, oy + 55], fill=128)
    return m


def photo(mask: Image.Image | None = None, background=(BG, BG, BG)) -> Image.Image:
    """RGB "photo" of the garment: dark shape, lighter stripe, on a light background."""
    m = np.asarray(mask or garment_mask())
    rgb = np.empty((*m.shape, 3), np.uint8)
    rgb[:] = background
    rgb[m == 255] = (DARK, DARK + 5, DARK - 5)
    rgb[m == 128] = (STRIPE, STRIPE, STRIPE)
    return Image.fromarray(rgb)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return images.to_fashion_mnist(photo())


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def close(a: np.ndarray, b: np.ndarray, lossy: bool) -> bool:
    """Lossless: nearly equal levels. Lossy: the same picture up to compression noise and brightness."""
    if lossy:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) > LOSSY_CORRELATION
    return mae(a, b) < LOSSLESS_MAE


def convert_file(path) -> np.ndarray:
    out = images.to_fashion_mnist(images.load_image(path))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    return out


# --------------------------------------------------------------------------- the recipe itself
def test_reference_follows_the_recipe(reference):
    """Negated (garment bright on black), trimmed to 28 on the long edge, centred."""
    assert reference.shape == (28, 28) and reference.dtype == np.uint8
    assert reference[:, :2].max() < 30 and reference[:, -2:].max() < 30  # black margins beside the garment
    rows, cols = np.flatnonzero(reference.max(1) > 30), np.flatnonzero(reference.max(0) > 30)
    assert rows[-1] - rows[0] + 1 >= 27  # the long (vertical) edge fills the frame
    assert 17 <= cols[-1] - cols[0] + 1 <= 24  # aspect ratio kept: 131 / 171 of 28 ≈ 21
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1.0  # centred horizontally
    assert reference.max() == 255  # the darkest garment part becomes the brightest pixel


def test_position_scale_and_background_level_do_not_matter(reference):
    moved = images.to_fashion_mnist(photo(garment_mask(300, 260, dx=60, dy=40)))
    assert mae(moved, reference) < 1.0
    big = photo().resize((540, 720), Image.Resampling.BICUBIC)
    assert close(images.to_fashion_mnist(big), reference, lossy=True)
    grey = images.to_fashion_mnist(photo(background=(200, 200, 200)))  # a grey table instead of white
    assert mae(grey, reference) < LOSSLESS_MAE


def test_dark_background_is_not_negated(reference):
    """A light garment on black is already in the dataset's polarity: it gives the same image."""
    out = images.to_fashion_mnist(Image.fromarray(255 - np.asarray(photo())))
    assert out[:, :2].max() < 30  # black stays black
    assert mae(out, reference) < LOSSLESS_MAE


def test_fashion_mnist_image_passes_through_unchanged(dataset):
    (_, _), (x_test, _) = dataset
    for x in x_test[:500]:
        assert np.array_equal(images.to_fashion_mnist(x), x)
    assert np.array_equal(images.to_fashion_mnist(Image.fromarray(x_test[0])), x_test[0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=28 * 28, max_size=28 * 28), st.integers(0, 40))
def test_dark_bordered_28x28_passes_through(pixels, border):
    x = np.array(pixels, np.uint8).reshape(28, 28)
    x[0], x[-1], x[:, 0], x[:, -1] = border, border, border, border
    if int(x.max()) - border <= images.BLANK_CONTRAST:  # one flat colour: refused, as a flat photo is
        with pytest.raises(ImageError, match="blank"):
            images.to_fashion_mnist(x)
    else:
        assert np.array_equal(images.to_fashion_mnist(x), x)


def test_light_28x28_is_negated():
    x = np.full((28, 28), 250, np.uint8)
    x[4:24, 10:18] = 10
    out = images.to_fashion_mnist(x)
    assert out[0, 0] == 0 and out[14, 14] == 255


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(40, 400),
    st.integers(40, 400),
    st.floats(0.1, 0.9),
    st.floats(0.1, 0.9),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_any_rectangle_is_trimmed_scaled_and_centred(h, w, fh, fw, fy, fx):
    """A dark rectangle anywhere on a light canvas fills the frame on its long edge, centred."""
    canvas = np.full((h, w), 240, np.uint8)
    rh, rw = max(2, round(h * fh)), max(2, round(w * fw))
    top, left = round((h - rh) * fy), round((w - rw) * fx)
    canvas[top : top + rh, left : left + rw] = 20
    out = images.to_fashion_mnist(canvas)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.flatnonzero(out.max(1) > 127), np.flatnonzero(out.max(0) > 127)
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert max(height, width) >= 27
    assert abs(min(height, width) - 28 * min(rh, rw) / max(rh, rw)) <= 2.0  # aspect ratio kept
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1.0 and abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1.0


def test_enlarged_fashion_mnist_image_comes_back_close(dataset):
    """The round trip enlarge -> negate -> place on a margin -> recipe is close to identity."""
    (_, _), (x_test, _) = dataset
    errors = []
    for i, x in enumerate(x_test[:40]):
        size = 300 + 13 * i
        big = np.asarray(Image.fromarray(x).resize((size, size), Image.Resampling.BICUBIC))
        page = np.pad(255 - big, ((25, 70), (90, 15)), constant_values=255)
        errors.append(mae(images.to_fashion_mnist(page), x))
    assert np.mean(errors) < 10.0  # gray levels; the blur of two resamplings is most of it


@pytest.mark.parametrize("level", [0, 128, 250])
@pytest.mark.parametrize("shape", [(100, 80), (28, 28)])
def test_blank_image_is_an_error(level, shape):
    """Flat black, grey or white, large or already 28×28: there is no garment to classify."""
    with pytest.raises(ImageError, match="blank"):
        images.to_fashion_mnist(np.full(shape, level, np.uint8))


# --------------------------------------------------------------------------- arrays
def test_array_kinds(reference):
    rgb = np.asarray(photo())
    gray = np.asarray(photo().convert("L"))
    assert mae(images.to_fashion_mnist(rgb), reference) < LOSSLESS_MAE
    assert mae(images.to_fashion_mnist(rgb.astype(np.float32) / 255), reference) < LOSSLESS_MAE
    assert mae(images.to_fashion_mnist(gray.astype(np.uint16) * 257), reference) < LOSSLESS_MAE
    assert mae(images.to_fashion_mnist(gray[..., None]), reference) < LOSSLESS_MAE
    rgba = np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])
    assert mae(images.to_fashion_mnist(rgba), reference) < LOSSLESS_MAE
    assert images.to_fashion_mnist(np.asarray(garment_mask()) == 0).max() == 255  # bool: shape black on white


@pytest.mark.parametrize(
    "bad", [np.zeros((5, 5, 5)), np.zeros((2, 3, 4, 5)), np.zeros((0, 10)), np.array([["a"]]), np.full((9, 9), np.nan)]
)
def test_bad_arrays_are_image_errors(bad):
    with pytest.raises(ImageError):
        images.to_fashion_mnist(bad)


# --------------------------------------------------------------------------- file kinds
@pytest.mark.parametrize(
    ("fmt", "suffix", "mode", "lossy"),
    [
        ("PNG", ".png", "RGB", False),
        ("PNG", ".png", "L", False),
        ("JPEG", ".jpg", "RGB", True),
        ("JPEG", ".jpeg", "L", True),
        ("WEBP", ".webp", "RGB", True),
        ("GIF", ".gif", "P", False),
        ("BMP", ".bmp", "RGB", False),
        ("TIFF", ".tiff", "RGB", False),
        ("TIFF", ".tif", "CMYK", False),
        ("JPEG", ".jpg", "CMYK", True),
        ("PNG", ".png", "P", False),
        ("BMP", ".bmp", "P", False),
    ],
)
def test_file_formats_and_modes(tmp_path, reference, fmt, suffix, mode, lossy):
    im = photo().convert(mode) if mode != "P" else photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path = tmp_path / f"garment{suffix}"
    im.save(path, fmt)
    assert Image.open(path).mode == mode  # really written in the mode under test
    assert close(convert_file(path), reference, lossy)


def test_lossless_webp(tmp_path, reference):
    photo().save(tmp_path / "g.webp", "WEBP", lossless=True)
    assert mae(convert_file(tmp_path / "g.webp"), reference) < LOSSLESS_MAE


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale(tmp_path, reference, fmt):
    gray16 = np.asarray(photo().convert("L")).astype(np.uint16) * 257
    path = tmp_path / f"g16.{fmt.lower()}"
    Image.fromarray(gray16).save(path, fmt)
    assert Image.open(path).mode.startswith("I;16")
    assert mae(convert_file(path), reference) < LOSSLESS_MAE


def test_32_bit_integer_tiff(tmp_path, reference):
    """Mode 'I' holding 16-bit levels, and holding 8-bit levels, both come out right."""
    gray = np.asarray(photo().convert("L")).astype(np.int32)
    for scale in (257, 1):
        path = tmp_path / f"g32-{scale}.tiff"
        Image.fromarray(gray * scale, "I").save(path, "TIFF")
        assert Image.open(path).mode == "I"
        assert mae(convert_file(path), reference) < LOSSLESS_MAE


def test_bilevel_image(tmp_path):
    path = tmp_path / "bw.png"
    Image.fromarray(np.asarray(garment_mask()) == 0).convert("1").save(path)
    assert Image.open(path).mode == "1"
    out = convert_file(path)
    assert out[0, 0] == 0 and out.max() == 255


def test_animated_gif_uses_first_frame(tmp_path, reference):
    first = photo().convert("L")
    second = Image.fromarray(255 - np.asarray(garment_mask(dx=40).rotate(90)))  # a different picture
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second, first], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    assert mae(convert_file(path), reference) < LOSSLESS_MAE
    opened = Image.open(path)
    opened.seek(1)  # even a Pillow image left on a later frame
    assert mae(images.to_fashion_mnist(opened), reference) < LOSSLESS_MAE


@pytest.mark.parametrize(
    ("orientation", "stored_as"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)],
)
def test_exif_orientation(tmp_path, reference, orientation, stored_as):
    """A phone photo stored sideways with an EXIF Orientation tag is turned upright first."""
    stored = photo().transpose(stored_as)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif)
    upright = convert_file(path)
    assert close(upright, reference, lossy=True)
    assert not close(images.to_fashion_mnist(stored), reference, lossy=True)  # the tag really mattered
    assert close(images.to_fashion_mnist(Image.open(path)), reference, lossy=True)  # also for an opened image


# --------------------------------------------------------------------------- transparency
def cutout(mode: str) -> Image.Image:
    """The garment with a transparent background whose hidden colour is black."""
    m = np.asarray(garment_mask())
    rgb = np.asarray(photo()).copy()
    rgb[m == 0] = 0  # what a viewer ignoring alpha would show: black
    alpha = np.where(m > 0, 255, 0).astype(np.uint8)
    im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return im.convert("LA") if mode == "LA" else im


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_background_is_composited_on_white(tmp_path, reference, mode):
    path = tmp_path / f"cutout-{mode}.png"
    cutout(mode).save(path)
    assert Image.open(path).mode == mode
    assert mae(convert_file(path), reference) < LOSSLESS_MAE
    assert mae(images.to_fashion_mnist(cutout(mode).convert("RGB")), reference) > 40  # dropping alpha would fail


def test_palette_transparency(tmp_path, reference):
    m = np.asarray(garment_mask())
    idx = np.select([m == 255, m == 128], [1, 2], 0).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, DARK, DARK, DARK, STRIPE, STRIPE, STRIPE])  # index 0: black, but transparent
    path = tmp_path / "palette-transparent.png"
    im.save(path, transparency=0)
    assert "transparency" in Image.open(path).info
    assert mae(convert_file(path), reference) < LOSSLESS_MAE


def test_transparent_hole_takes_the_border_colour(tmp_path):
    """Transparency inside an opaque picture is filled with the picture's own background."""
    m = np.asarray(garment_mask())
    rgb = np.asarray(photo()).copy()
    alpha = np.full(m.shape, 255, np.uint8)
    hole = (slice(120, 150), slice(30, 60))  # a hole through the garment
    alpha[hole], rgb[hole] = 0, 0
    path = tmp_path / "hole.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    filled = rgb.copy()
    filled[hole] = BG
    assert mae(convert_file(path), images.to_fashion_mnist(filled)) < LOSSLESS_MAE


def test_semi_transparent_webp(tmp_path, reference):
    path = tmp_path / "cutout.webp"
    cutout("RGBA").save(path, "WEBP", lossless=True)
    assert mae(convert_file(path), reference) < LOSSLESS_MAE


# --------------------------------------------------------------------------- bad files
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` pixels (and holds almost nothing)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _bad_files(tmp_path):
    good = tmp_path / "good.png"
    photo().save(good)
    jpeg = tmp_path / "good.jpg"
    photo().save(jpeg, quality=90)
    files = {
        "empty": (tmp_path / "empty.png", b""),
        "not an image": (tmp_path / "notes.png", b"these are my notes, not a picture\n" * 20),
        "truncated png": (tmp_path / "cut.png", good.read_bytes()[: good.stat().st_size // 2]),
        "truncated jpeg": (tmp_path / "cut.jpg", jpeg.read_bytes()[: jpeg.stat().st_size // 2]),
        "bomb over Pillow's limit": (tmp_path / "bomb.png", _png_header(100_000, 100_000)),
        "bomb over fmnist's limit": (tmp_path / "bomb2.png", _png_header(20_000, 5_000)),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {k: p for k, (p, _) in files.items()} | {"missing": tmp_path / "nope.jpg", "directory": tmp_path}


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "not an image",
        "truncated png",
        "truncated jpeg",
        "bomb over Pillow's limit",
        "bomb over fmnist's limit",
        "missing",
        "directory",
    ],
)
def test_bad_file_is_one_image_error_naming_it(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(ImageError) as info:
        images.load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_pixel_limit_is_a_parameter(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (300, 300), 255).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        images.load_image(path, max_pixels=300 * 299)
    assert images.load_image(path, max_pixels=300 * 300).size == (300, 300)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    photo().save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="permission"):
        images.load_image(path)
