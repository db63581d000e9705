"""Listening: bind the socket (a clear error when the port is taken), then run uvicorn on it.

    sock = bind(config)                     # port 0 picks a free one: url(sock) says which
    run(create_app("runs/default", config), sock)

Binding first, outside uvicorn, turns "address already in use" into an ``FmnistError`` that
the CLI prints as one line, and lets tests and benchmarks learn a free port before serving.
"""

from __future__ import annotations

import signal
import socket
import threading

from fmnist.errors import FmnistError
from fmnist.serve.config import ServeConfig

GRACEFUL_SHUTDOWN_SECONDS = 5  # requests in flight get this long to finish on Ctrl-C


class ServeError(FmnistError):
    """The server cannot start as asked (the address is taken, the host unknown, ...)."""


def bind(config: ServeConfig) -> socket.socket:
    """A listening TCP socket on ``config.host:config.port``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ServeError(f"cannot listen on {config.host!r} ({e}): give an address of this machine with --host.") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ServeError(
            f"cannot listen on {config.host}:{config.port} ({e.strerror or e}): pick another --port "
            "(or stop the program using it)."
        ) from e
    return sock


def url(sock: socket.socket) -> str:
    """The page's address for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):  # listening everywhere: this machine's loopback reaches it
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def uvicorn_server(app, log_level: str = "warning"):
    """A uvicorn Server for ``app`` (run it with ``.run(sockets=[sock])``; stop it with ``.should_exit = True``).
    When it begins to shut down, the app's ``begin_shutdown`` (gRPC, if it runs) stops taking calls too."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            begin = getattr(getattr(app, "state", None), "begin_shutdown", None)
            if begin is not None:
                begin()  # gRPC stops taking new calls now and finishes its own beside HTTP's drain
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
    )
    return Server(config)


def run(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until interrupted. SIGTERM drains: the socket stops accepting,
    requests in flight are answered (for up to GRACEFUL_SHUTDOWN_SECONDS), then this returns."""
    main = threading.current_thread() is threading.main_thread()
    # uvicorn raises the signal again once it has drained; a handler that ignores it makes that a clean return.
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
    try:
        uvicorn_server(app, log_level).run(sockets=[sock])
    finally:
        sock.close()
        if main:
            signal.signal(signal.SIGTERM, previous)
