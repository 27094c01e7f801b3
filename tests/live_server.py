"""The real web app under a real uvicorn, in a thread, on a free loopback port: tests talk HTTP to it."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 from a background thread.

    The listening socket is bound here, before uvicorn starts, so the port is known and no other process can
    take it in between.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        # log_config=None: uvicorn leaves logging as pytest set it up, so its records reach caplog.
        # proxy_headers=False: as in production (web.app.server_config), the app itself believes forwarded headers
        # only from [web] trusted_proxies.
        config = uvicorn.Config(
            app, log_config=None, access_log=False, timeout_graceful_shutdown=5, proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._socket.getsockname()[1])

    def url(self, path: str = "") -> str:
        """The address of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving and wait until uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def close(self) -> None:
        """Ask uvicorn to finish, wait for its thread and close the socket.

        A connection a client left open (a browser's keep-alive, a request cut short) can outlive uvicorn's
        shutdown as a transport of its closed event loop; garbage-collected later, it warns "unclosed transport"
        in whichever test runs then, which the suite's warnings-as-errors makes that test's error. They belong to
        this server, which is gone: they are collected here, their ResourceWarning ignored, and nothing else.
        """
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@contextmanager
def live_server(app: ASGIApp) -> Iterator[LiveServer]:
    """A started LiveServer for ``app``, stopped and closed on the way out."""
    server = LiveServer(app)
    try:
        server.start()
        yield server
    finally:
        server.close()
