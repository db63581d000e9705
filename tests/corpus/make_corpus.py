"""Write tests/corpus/: small hostile inputs for every entry point that reads a file.

    python tests/corpus/make_corpus.py        # rewrites the files and MANIFEST.json

Four kinds, by the entry points that take them (tests/test_corpus.py runs each file through
each): ``dataset`` files (a dataset file in a --data-dir), ``image`` files (fmnist predict,
Predictor, fmnist.images) and ``model`` files (fmnist evaluate / predict / report, runs.load_model,
Predictor.load), and ``request`` bodies (JSON the server's V2 and TF Serving routes read, with the
headers to send them with where the entry names some).
MANIFEST.json records each file's kind and what fmnist must do with it:
``error`` (the project's error, one line) or ``ok`` (a correct result). The same bytes every
time (fixed seeds, no timestamps) except in the .keras archives, which record when they were saved.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FILES_DIR = HERE / "files"
MANIFEST = HERE / "MANIFEST.json"
GZIP_MTIME = 0  # gzip headers carry a time: a fixed one keeps the bytes reproducible


# --------------------------------------------------------------------------- dataset files
def idx(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: magic (0, 0, type, ndim), big-endian dimensions, then the data."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1").tobytes()


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=GZIP_MTIME)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def dataset_files() -> dict[str, tuple[bytes, str]]:
    """Each file and what ``data.parse_idx(data.read_bytes(file))`` must do with it. In a --data-dir
    every one of them is an error: none has the digest of the real file it stands in for."""
    rng = np.random.default_rng(0)
    labels = idx(rng.integers(0, 10, 500, dtype=np.uint8))
    images = idx(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    packed = gz(labels)
    return {
        "labels-truncated.gz": (packed[: len(packed) // 2], "error"),
        "labels-bitflip.gz": (flip(packed, len(packed) // 2), "error"),  # the CRC no longer matches
        "labels-not-fashion-mnist.gz": (packed, "ok"),  # a well-formed IDX, but not the real file
        "images-truncated.idx": (images[: len(images) - 100], "error"),
        "images-bitflip.idx": (flip(images, 200), "ok"),  # a pixel changed: parses, fails verification
        "images-wrong-magic.idx": (b"\x08\x03" + images[2:], "error"),
        "images-unknown-type.idx": (images[:2] + b"\x42" + images[3:], "error"),
        "images-wrong-count.idx": (images[:4] + struct.pack(">I", 40) + images[8:], "error"),  # 40 said, 4 held
        "zero-bytes.gz": (b"", "error"),
        "text-as.gz": (b"this is not a dataset file\n", "error"),
    }


# --------------------------------------------------------------------------- images
def garment(size=(40, 30)) -> Image.Image:
    """A bright, asymmetric garment-like shape on black (an L: a tall bar and a foot to the right)."""
    a = np.zeros(size, np.uint8)
    h, w = size
    a[h // 8 : h - h // 8, w // 5 : w // 5 + w // 4] = 220
    a[h - h // 8 - h // 6 : h - h // 8, w // 5 : w - w // 6] = 220
    return Image.fromarray(a)


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes declaring width × height gray pixels (10 gigapixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    idat = zlib.compress(row * 4, 9)  # a few rows; a decoder would need all of them
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def image_files() -> dict[str, tuple[bytes, str]]:
    g = garment()
    rgb = Image.merge("RGB", [g, g, g])
    jpeg, png, webp = save(rgb, "JPEG", quality=90), save(g, "PNG"), save(rgb, "WEBP", quality=80)
    frames = [g, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view; stored rotated the other way
    rotated = rgb.transpose(Image.Transpose.ROTATE_90)
    gray16 = Image.fromarray(np.asarray(g, np.uint16) * 257)  # 16-bit grayscale ("I;16")
    la = Image.merge("LA", [g, Image.new("L", g.size, 255)])
    return {
        "zero-bytes.png": (b"", "error"),
        "text-as.png": (b"a text file with an image's name\n", "error"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "error"),
        "truncated.png": (png[: len(png) // 2], "error"),
        "truncated.webp": (webp[: len(webp) // 2], "error"),
        "bitflip-crc.png": (flip(png, len(png) - 20), "error"),  # a chunk whose CRC fails
        "decompression-bomb.png": (png_bomb(), "error"),
        "animated.gif": (animated.getvalue(), "ok"),  # the first frame
        "cmyk.jpg": (save(rgb.convert("CMYK"), "JPEG", quality=90), "ok"),
        "gray16.png": (save(gray16, "PNG"), "ok"),
        "palette.png": (save(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG"), "ok"),
        "la.png": (save(la, "PNG"), "ok"),
        "one-pixel.png": (save(Image.new("L", (1, 1), 200), "PNG"), "error"),  # one flat colour: blank
        "blank.png": (save(Image.new("RGB", (64, 48), (240, 240, 240)), "PNG"), "error"),
        "black-28x28.png": (save(Image.new("L", (28, 28), 0), "PNG"), "error"),  # blank too, already 28×28
        "exif-rotated.jpg": (save(rotated, "JPEG", quality=95, exif=exif), "ok"),
        "upright.png": (png, "ok"),  # the reference the EXIF-rotated photo must match
    }


# --------------------------------------------------------------------------- request bodies
def request_files() -> dict[str, bytes | tuple[bytes, dict[str, str]]]:
    """JSON bodies nested deeper than a parser's recursion, or than any tensor, a number too big for a float,
    and binary-extension headers that are not a length (some with the headers to send): each a 400, never a 500."""
    zeros = "0"
    for _ in range(200):  # 200 dimensions: more than NumPy's 64
        zeros = f"[{zeros}]"
    deep_tensor = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": "@"}]})
    deep_tensor = deep_tensor.replace('"@"', zeros)
    huge = "9" * 400  # a JSON integer no float holds: float() raises OverflowError
    huge_number = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": "@"}], "instances": "@"}
    ).replace('"@"', f"[{huge}]")  # fmt: skip (V2 and TF Serving alike)
    binary = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 784}}]}).encode() + bytes(784)  # fmt: skip
    header = "Inference-Header-Content-Length"
    return {
        "huge-integer.json": huge_number.encode(),
        "binary-header-superscript.bin": (binary, {header: "\u00b2"}),  # "²": str.isdigit() says yes, int() no
        "binary-header-5000-digits.bin": (binary, {header: "1" * 5000}),  # over int()'s 4,300 digits
        "nested-arrays-1000.json": b"[" * 1000 + b"]" * 1000,  # 2 kB: json.loads raises RecursionError
        "nested-arrays-100000.json": b"[" * 100_000 + b"]" * 100_000,
        "nested-objects-1000.json": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "nested-tensor-200.json": deep_tensor.encode(),  # parses; no array has 200 dimensions
    }


# --------------------------------------------------------------------------- models
def model_files() -> dict[str, bytes]:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import tempfile

    import keras

    keras.utils.set_random_seed(0)

    def saved(model) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "m.keras"
            model.save(path)
            return path.read_bytes()

    def dense(inputs, outputs):
        return keras.Sequential([keras.Input(inputs), keras.layers.Flatten(), keras.layers.Dense(outputs, "softmax")])

    good = saved(dense((28, 28), 10))
    return {
        "truncated.keras": good[: len(good) // 3],
        "wrong-input-shape.keras": saved(dense((8, 8, 3), 10)),
        "five-outputs.keras": saved(dense((28, 28), 5)),
        "zero-bytes.keras": b"",
        "text-as.keras": b"not a zip archive\n",
    }


def main() -> int:
    FILES_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (data, expect) in dataset_files().items():
        manifest[name] = {"kind": "dataset", "expect": expect}
        (FILES_DIR / name).write_bytes(data)
    for name, (data, expect) in image_files().items():
        manifest[name] = {"kind": "image", "expect": expect}
        (FILES_DIR / name).write_bytes(data)
    for name, data in request_files().items():
        data, headers = data if isinstance(data, tuple) else (data, None)
        manifest[name] = {"kind": "request", "expect": "error", **({"headers": headers} if headers else {})}
        (FILES_DIR / name).write_bytes(data)
    for name, data in model_files().items():
        manifest[name] = {"kind": "model", "expect": "error"}
        (FILES_DIR / name).write_bytes(data)
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum((FILES_DIR / n).stat().st_size for n in manifest)
    print(f"wrote {len(manifest)} files ({total:,} bytes) to {FILES_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
