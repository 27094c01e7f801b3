"""The web's limits: rate limits, in each process or shared by every process and node through Redis, and the
size and time limits of a request's head (``limited_protocol``).

Rate limits: at most N events per key (a client address, an email address, an API token) in a sliding window,
each limit under a name of its own (``subscribe-client``, ``login``...) so that one key in two limits is counted
twice apart. ``[web] limits_storage`` says where they count:

- ``memory://`` (the default): in this process. Memory is bounded: keys whose window has passed are dropped as
  new ones come, and past ``max_keys`` the least recently seen key goes first. Forgotten on restart, and every
  process and node counts alone, so N processes let N times the limit through.
- a Redis URL: in Redis, through the ``limits`` package's moving window (the same exact sliding window, one
  timestamp per event, a refused event not counted), so every process and node of the site counts together.
  Keys are ``syndication:<prefix>:LIMITER/<limit's name>/<SHA-256 of the key>/...`` (no address is stored in
  Redis), with ``[web] limits_prefix`` or else the site's base_url as the prefix, and expire with their window.
  When Redis cannot be reached (or answers too slowly), a limit counts in this process again, as with
  ``memory://``: nobody gets a traceback and no subscription is lost, a warning is logged at most once a minute,
  and Redis is tried again after RETRY_SECONDS.

The cap that must hold across restarts and processes whatever the storage (emails to one address per day) is
kept in the store (``reserve_form_email``): one conditional upsert, so two processes cannot both take its last
place.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from syndication.config import Settings

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter
    from redis import Redis

log = logging.getLogger(__name__)

MEMORY: Final = "memory://"
# How long one call to Redis may take (connecting, then each answer) before the limit counts in this process:
# the callers wait for it, some on the event loop.
REDIS_TIMEOUT_SECONDS: Final = 0.25
# After Redis failed, how long the limits count in this process before Redis is tried again.
RETRY_SECONDS: Final = 15.0
# At most one warning about an unreachable Redis per this many seconds (per storage, per process).
WARN_EVERY_SECONDS: Final = 60.0


class SharedStorage:
    """One Redis (``[web] limits_storage``) as the limits of one site see it: their keys under ``prefix``.

    Each call answers None instead of raising when Redis cannot be reached; the caller then counts in its process.
    """

    def __init__(self, uri: str, prefix: str) -> None:
        self.uri = uri
        self.prefix = prefix
        self.shown = shown_uri(uri)
        self._limiter: MovingWindowRateLimiter | None = None
        self._redis: RedisStorage | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0  # time.monotonic() until which Redis is not tried
        self._warned_at: float | None = None

    def hit(self, name: str, key: str, limit: int, window_seconds: int) -> bool | None:
        """Count an event for ``key`` in the limit ``name`` if it is within it; whether it was (None: unknown)."""
        limiter = self._available()
        if limiter is None:
            return None
        try:
            allowed = limiter.hit(_item(limit, window_seconds), name, _hashed(key))
        except Exception as error:  # noqa: BLE001 - whatever Redis or its client raise, the request goes on
            self._failed(error)
            return None
        self._recovered()
        return allowed

    def retry_after(self, name: str, key: str, limit: int, window_seconds: int) -> int | None:
        """Seconds until ``key`` may have another event in the limit ``name`` (0: now; None: unknown)."""
        limiter = self._available()
        if limiter is None:
            return None
        try:
            stats = limiter.get_window_stats(_item(limit, window_seconds), name, _hashed(key))
        except Exception as error:  # noqa: BLE001 - as in hit
            self._failed(error)
            return None
        self._recovered()
        if stats.remaining > 0:
            return 0
        return max(1, math.ceil(stats.reset_time - time.time()))

    def problem(self) -> str | None:
        """Why Redis cannot be used now (it is asked, whatever the last calls found), or None when it answers."""
        try:
            self._connection().ping()
        except Exception as error:  # noqa: BLE001 - any failure is the answer
            self._failed(error)
            return _reason(error)
        self._recovered()
        return None

    def clear(self) -> int:
        """Remove every key of this prefix (tests, or after changing the limits); how many there were."""
        connection = self._connection()
        keys = list(connection.scan_iter(match=f"{_escaped(self._key_prefix)}:*", count=1000))
        return int(cast(int, connection.delete(*keys))) if keys else 0

    @property
    def _key_prefix(self) -> str:
        return f"syndication:{self.prefix}"

    def _connection(self) -> Redis:
        self._open()
        assert self._redis is not None
        return self._redis.get_connection()  # type: ignore[return-value]

    def _available(self) -> MovingWindowRateLimiter | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            return self._open()
        except Exception as error:  # noqa: BLE001 - a client that cannot even be made: counted here, and said
            self._failed(error)
            return None

    def _open(self) -> MovingWindowRateLimiter:
        """The limiter on Redis, made on first use (which connects to nothing yet)."""
        if self._limiter is not None:
            return self._limiter
        with self._lock:
            if self._limiter is None:
                # Imported here: only a process whose limits are shared needs them (and redis).
                from limits.storage import RedisStorage
                from limits.strategies import MovingWindowRateLimiter
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                storage = RedisStorage(
                    self.uri,
                    key_prefix=self._key_prefix,
                    wrap_exceptions=True,
                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                    retry=Retry(NoBackoff(), 0),  # type: ignore[arg-type]
                    health_check_interval=30,
                )
                self._redis = storage
                self._limiter = MovingWindowRateLimiter(storage)
            return self._limiter

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._down_until = now + RETRY_SECONDS
            if self._warned_at is not None and now - self._warned_at < WARN_EVERY_SECONDS:
                return
            self._warned_at = now
        log.warning(
            "rate limits: %s cannot be reached (%s); counting in this process, trying again within %d s",
            self.shown, _reason(error), RETRY_SECONDS, extra={"event": "limits-storage-down"},
        )  # fmt: skip

    def _recovered(self) -> None:
        if self._down_until == 0.0:
            return
        with self._lock:
            was_down, self._down_until = self._down_until != 0.0, 0.0
        if was_down:
            log.info("rate limits: %s answers again; counting there", self.shown, extra={"event": "limits-storage-up"})


# One SharedStorage per storage URL and prefix in a process: its limits share the connections and what is known
# of Redis being down (one timeout, one warning, not one per limit).
_shared: dict[tuple[str, str], SharedStorage] = {}
_shared_lock = threading.Lock()


def shared_storage(settings: Settings) -> SharedStorage | None:
    """The site's shared storage of rate limits, or None when they count in each process (``memory://``)."""
    uri = settings.web.limits_storage
    if uri == MEMORY:
        return None
    prefix = settings.web.limits_prefix or settings.site.base_url
    with _shared_lock:
        storage = _shared.get((uri, prefix))
        if storage is None:
            storage = _shared[uri, prefix] = SharedStorage(uri, prefix)
        return storage


def site_limit(settings: Settings, name: str, limit: int, window_seconds: float) -> RateLimit:
    """The rate limit ``name`` (``subscribe-client``, ``login``...) of the site, counted where ``[web]
    limits_storage`` says."""
    return RateLimit(limit, window_seconds, name=name, shared=shared_storage(settings))


def shown_uri(uri: str) -> str:
    """``uri`` with its password masked, for logs and reports."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:****@{netloc}").geturl()


def _hashed(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _escaped(text: str) -> str:
    """``text`` matched literally in a Redis MATCH pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _reason(error: Exception) -> str:
    cause = getattr(error, "storage_error", None) or error  # limits' StorageError wraps the client's error
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


_items: dict[tuple[int, int], RateLimitItem] = {}


def _item(limit: int, window_seconds: int) -> RateLimitItem:
    item = _items.get((limit, window_seconds))
    if item is None:
        from limits import RateLimitItemPerSecond

        item = _items[limit, window_seconds] = RateLimitItemPerSecond(limit, window_seconds)
    return item


class RateLimit:
    """``limit`` events per key within ``window_seconds``: in ``shared`` storage when it is given and answers,
    else in this process."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        name: str = "limit",
        shared: SharedStorage | None = None,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self.name = name
        self.shared = shared
        self._shared_window = max(1, math.ceil(window_seconds))  # Redis counts whole seconds
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count an event for ``key`` and say whether it is within the limit (a refused event is not counted)."""
        if self.shared is not None:
            allowed = self.shared.hit(self.name, key, self.limit, self._shared_window)
            if allowed is not None:
                return allowed
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
        if self.shared is not None:
            wait = self.shared.retry_after(self.name, key, self.limit, self._shared_window)
            if wait is not None:
                return wait
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            live = [hit for hit in hits if hit > now - self.window] if hits else []
            if len(live) < self.limit:
                return 0  # as allow would find it: the hits whose window has passed no longer count
            return max(1, int(live[-self.limit] + self.window - now + 0.999))

    def __len__(self) -> int:
        """The keys counted in this process."""
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
