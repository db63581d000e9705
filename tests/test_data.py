"""The dataset foundation: IDX parsing, digest verification, lookup order, download, array cache.

Unit tests build tiny IDX files here and point ``data.FILES`` at their digests, so every
path (verify, locate, download, cache) runs on kilobytes. Downloads go only to HTTP servers
started in this process on 127.0.0.1; a socket guard fails any test that reaches elsewhere.
The real-data tests (``dataset`` fixture) check shapes, dtypes, class balance and identity
with ``keras.datasets.fashion_mnist.load_data()``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fmnist import data
from fmnist.errors import DatasetError

# IDX type codes, written out independently of data._IDX_TYPES so the reader is checked against the spec.
IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
NAMES = tuple(data.FILES)  # train images, train labels, test images, test labels (load order)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
TIMEOUT_S = 0.25  # download timeout in these tests: a silent server costs this much per file
HANG_GUARD_S = 60  # a download still running after this long has ignored its timeout
POLL_S = 0.05  # how often the test servers check for shutdown
DEBIAN_SRC = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers and fixtures
def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of ``a``: two zero bytes, type code, ndim, big-endian sizes, big-endian data."""
    code = IDX_CODES[f"{a.dtype.kind}{a.dtype.itemsize}"]
    header = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Any connection to an address other than loopback fails the test instead of leaving the machine."""
    connect = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise AssertionError(f"test tried to reach {address}; only 127.0.0.1 is allowed")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(data, "MIRRORS", ("http://127.0.0.1:9/",))  # discard port: refused, never remote
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@dataclass
class Places:
    """Every place locate() looks, each an empty folder under tmp_path."""

    explicit: Path
    env: Path
    keras_home: Path
    debian: Path
    cache: Path

    @property
    def keras(self) -> Path:
        return self.keras_home / "datasets" / "fashion-mnist"

    @property
    def fmnist_cache(self) -> Path:
        return self.cache / "fashion-mnist"


@pytest.fixture
def places(tmp_path, monkeypatch) -> Places:
    p = Places(*(tmp_path / n for n in ("explicit", "env", "keras-home", "debian", "cache")))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(p.keras_home))
    monkeypatch.setattr(data, "DEBIAN_DIR", p.debian)
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(p.cache))
    return p


@dataclass
class Tiny:
    """A tiny Fashion-MNIST-shaped set: arrays in load order and each file's IDX bytes."""

    arrays: tuple[np.ndarray, ...]
    raws: dict[str, bytes]

    def write(self, directory: Path, *, gz: bool = True, level: int = 6, only=NAMES) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name in only:
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(self.raws[name], compresslevel=level, mtime=0))
            else:
                (directory / name).write_bytes(self.raws[name])
        return directory


@pytest.fixture
def tiny(places, monkeypatch) -> Tiny:
    """12 train and 5 test images; data.FILES holds their digests for the duration of the test."""
    rng = np.random.default_rng(7)
    arrays = (
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 12, dtype=np.uint8),
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
    )
    raws = {name: idx_bytes(a) for name, a in zip(NAMES, arrays, strict=True)}
    monkeypatch.setattr(data, "FILES", {name: sha256(raw) for name, raw in raws.items()})
    return Tiny(arrays, raws)


def assert_same(loaded, arrays) -> None:
    (x_train, y_train), (x_test, y_test) = loaded
    for got, want in zip((x_train, y_train, x_test, y_test), arrays, strict=True):
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- IDX format
@given(hnp.arrays(st.sampled_from(["u1", "i1", "<i2", "<i4", "<f4", "<f8"]), hnp.array_shapes(max_dims=4, min_side=0)))
def test_idx_round_trip(a):
    out = data.parse_idx(idx_bytes(a))
    assert out.shape == a.shape
    assert out.dtype == a.dtype  # native byte order, same kind and size
    assert out.tobytes() == a.tobytes()  # bitwise, so NaNs and -0.0 count too


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_gzip_and_raw_files_read(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(idx_bytes(a)) if gz else idx_bytes(a))
    np.testing.assert_array_equal(data.parse_idx(data.read_bytes(path), str(path)), a)


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))  # header 12 bytes + 12 bytes of data


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\x01\x00" + GOOD[2:], ["bad IDX magic 01000802"]),
        (b"\x00\x80" + GOOD[2:], ["bad IDX magic 00800802"]),
        (GOOD[:2] + b"\x07" + GOOD[3:], ["unknown IDX type code 0x07"]),
        (GOOD[:2] + b"\x0a" + GOOD[3:], ["unknown IDX type code 0x0a"]),
        (GOOD[:2] + b"\xff" + GOOD[3:], ["unknown IDX type code 0xff"]),
        (b"", ["0 bytes is too short"]),
        (GOOD[:3], ["3 bytes is too short"]),
        (GOOD[:8], ["truncated IDX header", "2 dimensions need 12"]),
        (GOOD[:3] + b"\x00", ["0 dimensions"]),
        (GOOD[:-1], ["truncated", "(3, 4) need 24 bytes", "has 23"]),
        (GOOD[:12], ["truncated", "has 12"]),
        (GOOD + b"\x00", ["trailing bytes", "(3, 4) need 24 bytes", "has 25"]),
        (GOOD[:4] + (4).to_bytes(4, "big") + GOOD[8:], ["truncated", "(4, 4) need 28 bytes"]),
        (GOOD[:2] + b"\x0c" + GOOD[3:], ["truncated", "need 60 bytes"]),  # int32: 4 bytes per item
        (GOOD[:4] + b"\xff" * 8 + GOOD[12:], ["truncated", "(4294967295, 4294967295)"]),  # no huge allocation
    ],
    ids=[
        "magic-first-byte",
        "magic-second-byte",
        "type-07",
        "type-0a",
        "type-ff",
        "empty",
        "short-header",
        "truncated-dims",
        "zero-dims",
        "one-byte-short",
        "no-data",
        "trailing-byte",
        "dims-larger-than-data",
        "type-wider-than-data",
        "huge-dims",
    ],
)
def test_idx_malformed(raw, words):
    with pytest.raises(DatasetError) as e:
        data.parse_idx(raw, "some-file")
    message = str(e.value)
    assert message.startswith("some-file: ") and "\n" not in message
    for word in words:
        assert word in message


@given(hnp.arrays("u1", hnp.array_shapes(max_dims=3, min_side=1)), st.data())
def test_idx_any_truncation_or_trailing_bytes_is_rejected(a, draw):
    raw = idx_bytes(a)
    cut = draw.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(DatasetError):
        data.parse_idx(raw[:cut])
    extra = draw.draw(st.binary(min_size=1, max_size=16), label="extra")
    with pytest.raises(DatasetError, match="trailing bytes"):
        data.parse_idx(raw + extra)


@given(st.binary(max_size=64))
def test_idx_arbitrary_bytes_give_an_array_or_a_dataset_error(raw):
    try:
        out = data.parse_idx(raw)
    except DatasetError:
        return
    assert isinstance(out, np.ndarray) and out.ndim == raw[3]


def test_read_bytes_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.gz"
    with pytest.raises(DatasetError, match=r"nope\.gz: cannot be read"):
        data.read_bytes(missing)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(GOOD * 50)[:30])
    with pytest.raises(DatasetError, match=r"cut\.gz: cannot be read .*fetch the file again"):
        data.read_bytes(cut)


# --------------------------------------------------------------------------- digest verification
@pytest.mark.parametrize(("gz", "level"), [(True, 1), (True, 9), (False, 0)], ids=["gzip-1", "gzip-9", "raw"])
def test_recompressed_copy_verifies(tiny, places, gz, level):
    tiny.write(places.explicit, gz=gz, level=level)
    assert_same(data.load_data(places.explicit, download_missing=False), tiny.arrays)


def _altered(raw: bytes) -> bytes:
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize("change", [_altered, lambda raw: raw[:-100], lambda raw: raw + b"\0"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_altered_or_truncated_content_fails_verification(tiny, places, change, gz):
    name = NAMES[0]
    tiny.write(places.explicit)
    bad = change(tiny.raws[name])
    path = places.explicit / (f"{name}.gz" if gz else name)
    (places.explicit / f"{name}.gz").unlink()
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(DatasetError) as e:
        data.load_data(places.explicit, download_missing=False)
    message = str(e.value)
    assert str(path) in message
    assert data.FILES[name] in message and sha256(bad) in message  # expected and actual
    assert "delete it and fetch it again" in message and "\n" not in message


def test_truncated_gzip_file_fails_naming_it(tiny, places):
    tiny.write(places.explicit)
    path = places.explicit / f"{NAMES[0]}.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=f"{path}: cannot be read"):
        data.load_data(places.explicit, download_missing=False)


# --------------------------------------------------------------------------- lookup order
ORDER = ["explicit", "env", "keras", "debian", "fmnist_cache"]
LABELS = {
    "explicit": "given path",
    "env": "$FMNIST_DATA_DIR",
    "keras": "Keras cache",
    "debian": "Debian package dataset-fashion-mnist",
    "fmnist_cache": "fmnist cache",
}


@pytest.mark.parametrize("first", range(len(ORDER)), ids=ORDER)
def test_lookup_order(tiny, places, monkeypatch, first):
    """Files in every place from ``first`` on: the earliest one wins."""
    for where in ORDER[first:]:
        tiny.write(getattr(places, where))
    if first <= ORDER.index("env"):
        monkeypatch.setenv("FMNIST_DATA_DIR", str(places.env))
    path = places.explicit if first == 0 else None
    info = data.locate(path, download_missing=False)
    assert info.source.directory == getattr(places, ORDER[first])
    assert info.source.label == LABELS[ORDER[first]]
    assert not info.downloaded
    assert info.files == {n: getattr(places, ORDER[first]) / f"{n}.gz" for n in NAMES}


def test_incomplete_places_are_skipped(tiny, places):
    tiny.write(places.keras, only=NAMES[:3])
    tiny.write(places.debian, only=NAMES[1:])
    tiny.write(places.fmnist_cache)
    assert data.locate(download_missing=False).source.directory == places.fmnist_cache


def test_keras_home_defaults_to_home(tiny, places, tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tiny.write(tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist")
    tiny.write(places.debian)
    assert data.locate(download_missing=False).source.directory == tmp_path / "home/.keras/datasets/fashion-mnist"


def test_raw_files_are_found_and_gz_preferred(tiny, places):
    tiny.write(places.debian, gz=False)
    info = data.locate(download_missing=False)
    assert info.files == {n: places.debian / n for n in NAMES}
    tiny.write(places.debian, only=NAMES[:1])
    assert data.locate(download_missing=False).files[NAMES[0]] == places.debian / f"{NAMES[0]}.gz"
    assert_same(data.load_data(download_missing=False), tiny.arrays)


@pytest.mark.parametrize("how", ["argument", "env"])
def test_explicit_dir_missing_files_names_them(tiny, places, monkeypatch, how):
    directory = places.explicit if how == "argument" else places.env
    tiny.write(directory, only=NAMES[::2])
    tiny.write(places.keras)  # complete, but an explicit folder is the only place looked
    if how == "env":
        monkeypatch.setenv("FMNIST_DATA_DIR", str(directory))
    with pytest.raises(DatasetError) as e:
        data.locate(directory if how == "argument" else None)  # download allowed: still not attempted
    message = str(e.value)
    assert f"missing there: {NAMES[1]}, {NAMES[3]}" in message
    assert str(directory) in message and str(places.keras) not in message
    assert not places.fmnist_cache.exists()


def _assert_offline_message(message: str, places: Places) -> None:
    assert message.startswith("Fashion-MNIST not found") and "\n" not in message
    for label, directory in [
        ("Keras cache", places.keras),
        ("Debian package dataset-fashion-mnist", places.debian),
        ("fmnist cache", places.fmnist_cache),
    ]:
        assert f"{label}: {directory}" in message
    assert "apt-get install dataset-fashion-mnist" in message  # fix 1
    assert "set FMNIST_DATA_DIR" in message and all(f"{n}.gz" in message for n in NAMES)  # fix 2


def test_offline_error_names_places_and_fixes(tiny, places):
    with pytest.raises(DatasetError) as e:
        data.load_data(download_missing=False)
    _assert_offline_message(str(e.value), places)


# --------------------------------------------------------------------------- download
class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.routes`` (path -> bytes); 404 for anything else. Records each path asked."""

    def do_GET(self):
        self.server.hits.append(self.path)
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def serve():
    """serve(routes) -> base URL of a new HTTP server on 127.0.0.1 (ephemeral port); its .hits list."""
    servers = []

    def start(routes: dict[str, bytes]):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
        server.routes, server.hits = routes, []
        threading.Thread(target=server.serve_forever, args=(POLL_S,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", server.hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent():
    """A server on 127.0.0.1 that accepts connections and never answers; yields (url, connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(POLL_S)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", held
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def gz_routes(raws: dict[str, bytes], level: int = 9) -> dict[str, bytes]:
    return {f"/{name}.gz": gzip.compress(raw, compresslevel=level) for name, raw in raws.items()}


def download(directory: Path, mirrors: list[str]) -> Path:
    """data.download with the test timeout, failing (not hanging) if it outlives HANG_GUARD_S."""
    result: list = []

    def run():
        try:
            result.append(data.download(directory, mirrors, timeout=TIMEOUT_S))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert result, f"download still running after {HANG_GUARD_S}s: the timeout was not applied"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def assert_cache_holds(directory: Path, tiny: Tiny) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{n}.gz" for n in NAMES)  # no .part left
    for name in NAMES:
        assert gzip.decompress((directory / f"{name}.gz").read_bytes()) == tiny.raws[name]


def test_download_good_files_verify_into_cache_atomically(tiny, places, serve, monkeypatch):
    url, hits = serve(gz_routes(tiny.raws))
    seen_before_verify = []
    verify = data.verify

    def spy(name, raw, path):
        seen_before_verify.append((path.name, (places.cache / f"{name}.gz").exists()))
        verify(name, raw, path)

    monkeypatch.setattr(data, "verify", spy)
    download(places.cache, [url])
    assert sorted(hits) == sorted(f"/{n}.gz" for n in NAMES)
    assert_cache_holds(places.cache, tiny)
    # each file was verified under its temporary name, before the final name existed
    assert seen_before_verify == [(f"{n}.gz.part", False) for n in NAMES]


def test_download_skips_files_already_there(tiny, places, serve):
    tiny.write(places.cache, only=NAMES[:2])
    url, hits = serve(gz_routes(tiny.raws))
    download(places.cache, [url])
    assert sorted(hits) == sorted(f"/{n}.gz" for n in NAMES[2:])
    assert_cache_holds(places.cache, tiny)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: gzip.compress(_altered(raw)),
        lambda raw: gzip.compress(raw[:-10]),
        lambda raw: gzip.compress(raw)[:-30],  # a cut-off transfer
        lambda raw: b"<html>Service unavailable</html>",
        None,  # 404
    ],
    ids=["altered", "truncated-content", "truncated-gzip", "html", "missing"],
)
def test_corrupt_mirror_is_skipped_for_the_next(tiny, places, serve, corrupt):
    bad_name = NAMES[2]
    routes = gz_routes(tiny.raws)
    if corrupt is None:
        del routes[f"/{bad_name}.gz"]
    else:
        routes[f"/{bad_name}.gz"] = corrupt(tiny.raws[bad_name])
    bad_url, bad_hits = serve(routes)
    good_url, good_hits = serve(gz_routes(tiny.raws, level=1))
    download(places.cache, [bad_url, good_url])
    assert sorted(bad_hits) == sorted(f"/{n}.gz" for n in NAMES)
    assert good_hits == [f"/{bad_name}.gz"]
    assert_cache_holds(places.cache, tiny)


def test_silent_server_fails_over_within_the_timeout(tiny, places, serve, silent):
    silent_url, connections = silent
    good_url, good_hits = serve(gz_routes(tiny.raws))
    download(places.cache, [silent_url, good_url])
    assert len(connections) == len(NAMES)  # each file waited on the silent server once, then moved on
    assert sorted(good_hits) == sorted(f"/{n}.gz" for n in NAMES)
    assert_cache_holds(places.cache, tiny)


def test_all_mirrors_failing_gives_the_offline_error(tiny, places, serve, silent):
    silent_url, _ = silent
    bad_url, _ = serve({f"/{n}.gz": gzip.compress(_altered(raw)) for n, raw in tiny.raws.items()})
    with pytest.raises(DatasetError) as e:
        data.locate(mirrors=[silent_url, bad_url], timeout=TIMEOUT_S)
    message = str(e.value)
    _assert_offline_message(message, places)
    assert "the download failed" in message and silent_url in message and bad_url in message
    assert not any(places.fmnist_cache.glob("*.gz*"))  # nothing unverified left behind


def test_load_data_downloads_into_the_cache_once(tiny, places, serve, monkeypatch):
    url, hits = serve(gz_routes(tiny.raws))
    monkeypatch.setattr(data, "MIRRORS", (url,))
    assert_same(data.load_data(), tiny.arrays)
    assert len(hits) == len(NAMES)
    info = data.locate()
    assert info.source.directory == places.fmnist_cache and not info.downloaded
    assert_same(data.load_data(), tiny.arrays)
    assert len(hits) == len(NAMES)  # found in the cache: no second download


# --------------------------------------------------------------------------- array cache
@pytest.fixture
def parses(monkeypatch) -> list:
    """Records each time the files are actually read and verified (a cache miss)."""
    calls = []
    read = data.read_verified

    def spy(info):
        calls.append(info)
        return read(info)

    monkeypatch.setattr(data, "read_verified", spy)
    return calls


def test_warm_load_uses_the_cache_and_is_identical(tiny, places, parses):
    tiny.write(places.explicit)
    cold = data.load_data(places.explicit)
    warm = data.load_data(places.explicit)
    assert len(parses) == 1 and data._arrays_cache_path().is_file()
    assert_same(cold, tiny.arrays)
    assert_same(warm, tiny.arrays)
    data.clear_cache()
    assert not data._arrays_cache_path().exists()
    assert_same(data.load_data(places.explicit), tiny.arrays)
    assert len(parses) == 2


def _flip(at):
    def change(raw: bytes) -> bytes:
        b = bytearray(raw)
        b[at(len(raw))] ^= 0xFF
        return bytes(b)

    return change


CACHE_DAMAGE = {
    "length-low-byte": _flip(lambda n: 0),
    "length-high-byte": _flip(lambda n: 7),
    "json-start": _flip(lambda n: 8),
    "json-middle": _flip(lambda n: 40),
    "body-first": _flip(lambda n: n - sum(a.size for a in TINY_SIZES)),
    "body-middle": _flip(lambda n: n - 3000),
    "body-last": _flip(lambda n: n - 1),
    "truncated-half": lambda raw: raw[: len(raw) // 2],
    "truncated-1": lambda raw: raw[:-1],
    "trailing-byte": lambda raw: raw + b"\0",
    "empty": lambda raw: b"",
    "garbage": lambda raw: os.urandom(len(raw)),
}
TINY_SIZES = (np.empty((12, 28, 28)), np.empty(12), np.empty((5, 28, 28)), np.empty(5))


def _assert_rebuilt(tiny, places, parses, damage) -> None:
    tiny.write(places.explicit)
    data.load_data(places.explicit)
    cache = data._arrays_cache_path()
    cache.write_bytes(damage(cache.read_bytes()))
    assert_same(data.load_data(places.explicit), tiny.arrays)
    assert len(parses) == 2  # the damaged cache was not trusted
    assert_same(data.load_data(places.explicit), tiny.arrays)
    assert len(parses) == 2  # and the rebuilt one is good


@pytest.mark.parametrize("damage", CACHE_DAMAGE.values(), ids=CACHE_DAMAGE.keys())
def test_damaged_cache_is_rebuilt(tiny, places, parses, damage):
    _assert_rebuilt(tiny, places, parses, damage)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.data())
def test_any_flipped_cache_byte_is_caught(tiny, places, parses, draw):
    parses.clear()
    data.clear_cache()
    _assert_rebuilt(tiny, places, parses, _flip(lambda n: draw.draw(st.integers(0, n - 1), label="byte")))


@pytest.mark.parametrize("change", ["mtime", "size", "place"])
def test_changed_source_rebuilds_the_cache(tiny, places, parses, change):
    tiny.write(places.explicit)
    data.load_data(places.explicit)
    path, where = places.explicit / f"{NAMES[1]}.gz", places.explicit
    if change == "mtime":
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    elif change == "size":
        before = path.stat()
        path.write_bytes(gzip.compress(tiny.raws[NAMES[1]], compresslevel=0))  # same content, stored
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the size tells
        assert path.stat().st_size != before.st_size
    else:
        where = tiny.write(places.debian)
    assert_same(data.load_data(where), tiny.arrays)
    assert len(parses) == 2


def test_changed_source_content_is_verified_not_served_from_cache(tiny, places):
    """A source replaced by a bad file (new size and mtime) fails verification; the old cache is not used."""
    tiny.write(places.explicit)
    data.load_data(places.explicit)
    path = places.explicit / f"{NAMES[0]}.gz"
    path.write_bytes(gzip.compress(_altered(tiny.raws[NAMES[0]])))
    os.utime(path, ns=(0, 10**18))
    with pytest.raises(DatasetError, match="SHA-256"):
        data.load_data(places.explicit)


def test_unwritable_cache_only_costs_speed(tiny, places, monkeypatch, parses):
    blocker = places.explicit.parent / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(blocker))
    tiny.write(places.explicit)
    assert_same(data.load_data(places.explicit), tiny.arrays)
    assert_same(data.load_data(places.explicit), tiny.arrays)
    assert len(parses) == 2


# --------------------------------------------------------------------------- the real data
def test_class_names():
    assert data.CLASS_NAMES == (
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
    assert data.NUM_CLASSES == 10


def test_real_data_shapes_dtypes_and_balance(dataset):
    (x_train, y_train), (x_test, y_test) = dataset
    assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == (
        (60000, 28, 28),
        (60000,),
        (10000, 28, 28),
        (10000,),
    )
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert data.class_counts(y_train) == [6000] * 10
    assert data.class_counts(y_test) == [1000] * 10
    assert x_train.min() == 0 and x_train.max() == 255


class TriedNetwork(Exception):
    """Keras' loader wanted to download instead of reading the cached files."""


def test_real_data_identical_to_keras(dataset, tmp_path, monkeypatch):
    if not all((DEBIAN_SRC / f"{n}.gz").is_file() for n in NAMES):
        pytest.skip(f"the comparison copies Debian's files from {DEBIAN_SRC}, which are not installed")
    keras_dir = tmp_path / "keras-home" / "datasets" / "fashion-mnist"
    keras_dir.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(DEBIAN_SRC / f"{name}.gz", keras_dir)
    from keras.src.backend import config
    from keras.src.utils import file_utils

    from fmnist._backend import keras

    # Keras reads $KERAS_HOME once, at import, so point its (private) accessor at the copies; any
    # download attempt is caught here (and the socket guard stops it reaching the network anyway).
    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path / "keras-home"))

    def offline(*args, **kwargs):
        raise TriedNetwork

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    try:
        theirs = keras.datasets.fashion_mnist.load_data()
    except TriedNetwork:
        pytest.skip("keras.datasets.fashion_mnist.load_data() tried the network despite the cached files")
    for ours_split, theirs_split in zip(dataset, theirs, strict=True):
        for a, b in zip(ours_split, theirs_split, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
