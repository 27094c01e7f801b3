"""The web's limits: in-process rate limits, and the size and time limits of a request's head (``limited_protocol``).

Rate limits: at most N events per key (a client address, an email address) in a sliding window.

Memory is bounded: keys whose window has passed are dropped as new ones come, and past ``max_keys`` the least
recently seen key goes first. Per process and forgotten on restart, which suits a burst limit; the cap that must
hold across restarts (emails to one address per day) is kept in the store (``reserve_form_email``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class RateLimit:
    """``limit`` events per key within ``window_seconds``."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count an event for ``key`` and say whether it is within the limit (a refused event is not counted)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            self._forget(now)
            return True

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may have another event (0 when it may now)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if not hits or len(hits) < self.limit:
                return 0
            return max(1, int(hits[0] + self.window - now + 0.999))

    def __len__(self) -> int:
        return len(self._hits)

    def _forget(self, now: float) -> None:
        # Oldest-seen keys first: stop at the first one still inside its window, unless over max_keys.
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            expired = not hits or hits[-1] <= now - self.window
            if not expired and len(self._hits) <= self.max_keys:
                break
            del self._hits[key]


# --- The request head: size and time ----------------------------------------------------------------------------

# How long a refused connection is read (and what it sends thrown away) before it is closed: a client still
# sending its head gets to read the answer instead of a reset. The bytes are not kept, whatever their number.
LINGER_SECONDS: Final = 2.0


def limited_protocol(
    max_head_bytes: int, max_target_bytes: int, head_timeout_seconds: float
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with limits on the request head, for ``uvicorn.Config(http=...)``.

    httptools (llhttp) has no limit of its own: it hands a header over only once it is complete, buffering it
    until then, and uvicorn keeps every header of a request. This subclass counts what arrives while a head is
    incomplete and the URL and headers the parser hands over; past ``max_head_bytes`` it answers ``431 Request
    Header Fields Too Large``, past ``max_target_bytes`` of request target ``414 URI Too Long``, then stops
    parsing, reads and discards whatever else comes for a moment (so that the client reads the answer) and
    closes. A head not complete ``head_timeout_seconds`` after the connection opened or its previous answer is
    answered ``408`` and closed (uvicorn's keep-alive timeout only runs between requests).
    """
    return type(
        "LimitedHttpToolsProtocol",
        (_LimitedHttpToolsProtocol,),
        {"max_head": max_head_bytes, "max_target": max_target_bytes, "head_timeout": head_timeout_seconds},
    )


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a head that is over a limit."""


class _LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_head: int = 64 * 1024
    max_target: int = 8 * 1024
    head_timeout: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0  # bytes received while the current head was incomplete
        self._counted = 0  # URL and header bytes the parser handed over for the current head
        self._in_head = True
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and thrown away
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadRefused) or self._refused:
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self._refused:
            # An incomplete head: what the parser holds unseen (a header not yet complete) counts too.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, "the request's headers are too large")

    def _invalid(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._counted = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._counted += len(url)
        if len(self.url) > self.max_target:
            self._refuse(414, "the request's address is too long")
            raise _HeadRefused
        self._check_counted()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._counted += len(name) + len(value) + 4
        self._check_counted()
        super().on_header(name, value)

    def _check_counted(self) -> None:
        if self._counted > self.max_head:
            self._refuse(431, "the request's headers are too large")
            raise _HeadRefused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_timer()  # the keep-alive timeout runs too, and closes an idle connection first

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: its head was complete
        self._refuse(408, "the request's head did not arrive in time")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close, reading and discarding what still comes for LINGER_SECONDS."""
        if self._refused:
            return
        self._refused = True
        self._disarm_head_timer()
        self.headers = []  # what was kept of the head goes now
        self.url = b""
        body = f"{reason}\n".encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
        self.logger.info("refused a request: %s (%d)", reason, status)

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()  # the client has read the answer and is done
