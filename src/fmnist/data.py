"""The Fashion-MNIST files: locate, verify, download, parse IDX, cache.

``load_data()`` returns exactly what ``keras.datasets.fashion_mnist.load_data()`` does
(uint8 arrays of shape (60000, 28, 28), (60000,), (10000, 28, 28), (10000,)), read from
the real files. Every file is verified by the SHA-256 of its *decompressed* bytes, so a
re-compressed copy (Debian's package) passes and a truncated or altered one does not.

Where the files are looked for, in order (``data_sources``):
  1. an explicit ``path`` argument, else ``$FMNIST_DATA_DIR``;
  2. Keras' cache, ``$KERAS_HOME/datasets/fashion-mnist`` (default ``~/.keras``);
  3. Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``);
  4. fmnist's own cache, ``$FMNIST_CACHE_DIR`` (default ``~/.cache/fmnist``),
and, if none holds them, a download from the official mirrors into fmnist's cache.

The verified arrays are kept uncompressed in fmnist's cache (``arrays-v1.bin``), keyed on
the source files' path, size and mtime and guarded by a CRC-32, so a warm load takes
milliseconds and a stale or damaged cache is rebuilt, never trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist.errors import DatasetError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28)

# name -> SHA-256 of the decompressed IDX bytes (identical for Zalando's, Keras' and Debian's copies).
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras'
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 30.0  # per connection attempt and per read; a silent server fails over
CACHE_VERSION = 1  # bump when the array cache layout changes
CACHE_HEADER_MAX = 1 << 20  # a larger JSON header length means a damaged cache, not one to allocate for

# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------- IDX format
def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into an array, rejecting anything malformed."""
    if len(raw) < 4:
        raise DatasetError(f"{name}: {len(raw)} bytes is too short to be an IDX file (needs a 4-byte header).")
    zero, type_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0:
        raise DatasetError(f"{name}: bad IDX magic {raw[:4].hex()} (the first two bytes must be 0); not an IDX file.")
    if type_code not in _IDX_TYPES:
        raise DatasetError(f"{name}: unknown IDX type code 0x{type_code:02x}; expected one of 08 09 0B 0C 0D 0E.")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX header declares 0 dimensions.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header}).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: huge dimensions cannot overflow
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{name}: {problem}: dimensions {shape} need {expected} bytes but the file has {len(raw)}.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (gzip or raw), with a clear error if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot be read ({e}); delete it and fetch the file again.") from e


# --------------------------------------------------------------------------- where the files are
@dataclass(frozen=True)
class Source:
    """One place the dataset may live."""

    label: str  # how the place is named to the user
    directory: Path

    def file(self, name: str) -> Path | None:
        """The file for ``name`` here (``name.gz`` preferred, else raw ``name``), or None."""
        for candidate in (self.directory / f"{name}.gz", self.directory / name):
            if candidate.is_file():
                return candidate
        return None

    def complete(self) -> bool:
        return all(self.file(name) for name in FILES)


def cache_dir() -> Path:
    """fmnist's own cache: downloads and the fast array cache."""
    if env := os.environ.get("FMNIST_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fmnist"


def data_sources(path: str | os.PathLike | None = None) -> list[Source]:
    """The places searched, in order. An explicit path (or $FMNIST_DATA_DIR) is the only place."""
    explicit = path if path is not None else os.environ.get("FMNIST_DATA_DIR")
    if explicit:
        label = "given path" if path is not None else "$FMNIST_DATA_DIR"
        return [Source(label, Path(explicit).expanduser())]
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    return [
        Source("Keras cache", keras_home / "datasets" / "fashion-mnist"),
        Source("Debian package dataset-fashion-mnist", DEBIAN_DIR),
        Source("fmnist cache", cache_dir() / "fashion-mnist"),
    ]


def _not_found(sources: Sequence[Source], why: str = "") -> DatasetError:
    places = "; ".join(f"{s.label}: {s.directory}" for s in sources)
    return DatasetError(
        f"Fashion-MNIST not found ({places}){why}. Fix: `apt-get install dataset-fashion-mnist`, "
        f"or put the four files ({', '.join(f + '.gz' for f in FILES)}) in a folder and set FMNIST_DATA_DIR to it."
    )


# --------------------------------------------------------------------------- download
def download(
    directory: Path,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    progressbar: object = False,
) -> Path:
    """Fetch the four files into ``directory``, trying each mirror in turn for each file.

    ``timeout`` (seconds) bounds the connection and each read, so a server that accepts but
    never answers costs one timeout before the next mirror is tried. pooch streams each file
    to a temporary name and renames it to ``<name>.gz.part``; that is verified and only then
    renamed to ``<name>.gz``, so a ``.gz`` in the cache has always passed verification. A
    file that does not verify is deleted and the next mirror is tried.
    """
    import pooch  # only needed when downloading

    directory.mkdir(parents=True, exist_ok=True)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch's INFO lines ("use this value as known_hash") would mislead users
    try:
        for name in FILES:
            target = directory / f"{name}.gz"
            if target.is_file():
                continue
            part = directory / f"{name}.gz.part"
            failures = []
            for mirror in mirrors:
                part.unlink(missing_ok=True)  # pooch would reuse a leftover instead of downloading
                try:
                    pooch.retrieve(
                        url=mirror.rstrip("/") + f"/{name}.gz",
                        known_hash=None,  # the mirrors' .gz differ; the decompressed digest is checked below
                        fname=part.name,
                        path=directory,
                        downloader=pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout),
                    )
                    verify(name, read_bytes(part), part)
                    os.replace(part, target)
                    break
                except Exception as e:  # network errors, HTTP errors, bad content: try the next mirror
                    part.unlink(missing_ok=True)
                    failures.append(f"{mirror}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            else:
                raise DatasetError(f"could not download {name}.gz from any mirror ({'; '.join(failures)})")
    finally:
        logger.setLevel(level)
    return directory


# --------------------------------------------------------------------------- verification and loading
def verify(name: str, raw: bytes, path: Path) -> None:
    """Raise DatasetError unless ``raw`` (decompressed) has the known digest of ``name``."""
    actual = hashlib.sha256(raw).hexdigest()
    if actual != FILES[name]:
        raise DatasetError(
            f"{path}: content does not match Fashion-MNIST's {name} (SHA-256 of the decompressed bytes "
            f"expected {FILES[name]}, got {actual}); the file is truncated or altered: delete it and fetch it again."
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What ``locate`` found: where, and how it was checked."""

    source: Source
    files: dict[str, Path]
    downloaded: bool = False


def locate(
    path: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    mirrors: Sequence[str] | None = None,
    progressbar: object = False,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> DatasetInfo:
    """Find the first place holding all four files, downloading into the cache if none does.

    ``mirrors`` (default ``MIRRORS``) and ``timeout`` (seconds per connection and read) are
    passed to ``download``.
    """
    sources = data_sources(path)
    for source in sources:
        if source.complete():
            return DatasetInfo(source, {name: source.file(name) for name in FILES})
    explicit = path is not None or bool(os.environ.get("FMNIST_DATA_DIR"))
    if explicit:
        missing = [n for n in FILES if not sources[0].file(n)]
        raise _not_found(sources, f"; missing there: {', '.join(missing)}")
    if not download_missing:
        raise _not_found(sources)
    cache = sources[-1]
    try:
        download(cache.directory, MIRRORS if mirrors is None else mirrors, timeout=timeout, progressbar=progressbar)
    except DatasetError as e:
        raise _not_found(sources, f", and the download failed: {e}") from e
    return DatasetInfo(cache, {name: cache.file(name) for name in FILES}, downloaded=True)


def _stamp(files: dict[str, Path]) -> dict[str, list]:
    return {n: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for n, p in files.items()}


_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _arrays_cache_path() -> Path:
    return cache_dir() / f"arrays-v{CACHE_VERSION}.bin"


def _crc(arrays: Sequence[np.ndarray]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).data, crc)
    return crc


def _read_cache(stamp: dict) -> tuple[np.ndarray, ...] | None:
    """The cached arrays if the cache belongs to these source files and is intact, else None.

    Layout: an 8-byte little-endian header length, a JSON header, then the four arrays'
    raw uint8 bytes back to back. One read into a bytearray keeps it at disk speed.
    """
    try:
        with open(_arrays_cache_path(), "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= CACHE_HEADER_MAX:  # a damaged length must not become a huge allocation
                return None
            meta = json.loads(f.read(size))
            n_body = sum(math.prod(shape) for shape in meta["shapes"])
            if n_body != os.fstat(f.fileno()).st_size - 8 - size:  # truncated or padded: no allocation for it
                return None
            body = bytearray(n_body)
            if f.readinto(body) != len(body):
                return None
        arrays, offset = [], 0
        for shape in meta["shapes"]:
            n = math.prod(shape)
            arrays.append(np.frombuffer(body, np.uint8, n, offset).reshape(shape))
            offset += n
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # missing, truncated, garbled: rebuild
        return None
    if meta.get("stamp") != stamp or meta.get("crc") != _crc(arrays) or len(arrays) != len(_KEYS):
        return None
    return tuple(arrays)


def _write_cache(stamp: dict, arrays: tuple[np.ndarray, ...]) -> None:
    target = _arrays_cache_path()
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        meta = json.dumps({"stamp": stamp, "crc": _crc(arrays), "shapes": [a.shape for a in arrays]}).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(len(meta).to_bytes(8, "little") + meta)
            for a in arrays:
                f.write(np.ascontiguousarray(a, dtype=np.uint8).data)
        os.replace(tmp, target)
    except OSError:
        # A read-only home only costs speed: the next load parses the files again.
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def read_verified(info: DatasetInfo) -> tuple[np.ndarray, ...]:
    """Decompress, verify and parse the four files: (x_train, y_train, x_test, y_test)."""
    arrays = []
    for name in FILES:
        raw = read_bytes(info.files[name])
        verify(name, raw, info.files[name])
        arrays.append(parse_idx(raw, str(info.files[name])))
    return tuple(arrays)


def load_data(
    path: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    progressbar: object = False,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))``, as ``keras.datasets.fashion_mnist.load_data()``.

    ``progressbar`` is passed to pooch for a download (True for tqdm, or a tqdm-like object).
    """
    info = locate(path, download_missing=download_missing, progressbar=progressbar)
    stamp = _stamp(info.files)
    arrays = _read_cache(stamp)
    if arrays is None:
        arrays = read_verified(info)
        _write_cache(stamp, arrays)
    x_train, y_train, x_test, y_test = arrays
    return (x_train, y_train), (x_test, y_test)


def clear_cache() -> None:
    """Remove fmnist's array cache (the source files stay)."""
    _arrays_cache_path().unlink(missing_ok=True)


def class_counts(labels: np.ndarray) -> list[int]:
    """How many of each class ``labels`` holds, in label order."""
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()


def check_index(index: int, size: int, split: str) -> None:
    if not 0 <= index < size:
        raise DatasetError(f"index {index} is out of range for the {split} split: use 0 to {size - 1}.")


__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "DatasetInfo",
    "clear_cache",
    "data_sources",
    "download",
    "load_data",
    "locate",
    "parse_idx",
]
