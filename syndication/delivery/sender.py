"""Draining the delivery queue: claim a batch, have each message built, send it through the Mailer, record what
happened.

Every message leaves through the service's one :class:`~syndication.delivery.mailer.Mailer`, which signs it and
owns the transport, over ``[delivery] connections`` connections it opens (one per sending thread).

Nothing is lost and nothing is sent twice, within one rule: a delivery is marked sent only after the transport
accepted it (the SMTP server's final 250), in its own transaction, right after that reply. A sender killed
between the two can have the messages in flight at that moment sent again by the next run (with the same
Message-ID, so receivers can drop the copy): at most ``connections`` messages. Claims are leases; rows held by a
dead sender return to the queue when the lease runs out, and a delivery whose sender died ``max_crashes`` times
is set aside as poisoned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from syndication.config import Settings
from syndication.core.models import DeliveryStatus
from syndication.delivery.mailer import Mailer
from syndication.delivery.transport import Transport
from syndication.errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    SenderBusy,
)
from syndication.store import database, ledger


@dataclass(frozen=True)
class Outgoing:
    """One built message (not yet sealed: the Mailer signs it as it leaves) for one claimed delivery."""

    claim: ledger.Claim
    recipient: str
    message: bytes


@dataclass
class DrainReport:
    """What a drain did."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    bounced: int = 0
    poisoned: int = 0
    lost_leases: int = 0
    finished_editions: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def handled(self) -> int:
        """Deliveries this drain dealt with."""
        return self.sent + self.deferred + self.failed + self.bounced


# Builds the messages of a batch of claims: each a message, or why none can be built.
Builder = Callable[[list[ledger.Claim]], "list[Outgoing | str]"]


class Sender:
    """Drains the queue of one store with ``[delivery] connections`` connections of ``mailer`` in parallel."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        clock: Callable[[], datetime],
        mailer: Mailer,
        *,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.mailer = mailer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.stop = threading.Event()  # set it (SIGTERM) to finish the messages in flight and stop
        # SQLite has one writer: this process's sending threads take turns here instead of meeting SQLite's
        # busy handler, which waits in sleeps of milliseconds. PostgreSQL needs no such turn-taking.
        self._write_turn: contextlib.AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._rate = _RateLimit(settings.delivery.rate_per_second)

    def drain(
        self,
        build: Builder,
        *,
        edition_id: int | None = None,
        on_progress: Callable[[DrainReport], None] | None = None,
        on_bounce: Callable[[int], None] | None = None,
    ) -> DrainReport:
        """Send every due delivery (of one edition, or all); returns when none is due or ``stop`` is set.

        Raises SenderBusy when another sender drains this SQLite store, ConfigError (before claiming anything)
        when the DKIM key cannot be used.
        """
        config = self.settings.delivery
        report = DrainReport()
        self.mailer.check()  # a DKIM key that cannot be read would fail every message: refuse before claiming any
        with self._single_sender_on_sqlite(), _Connections(self.mailer.connect) as connections:
            pool = ThreadPoolExecutor(max_workers=config.connections, thread_name_prefix="smtp")
            try:
                while not self.stop.is_set():
                    with database.transaction(self.engine) as session:
                        claims, poisoned = ledger.claim(
                            session, self.owner, self.clock(), lease=timedelta(seconds=config.lease_seconds),
                            limit=config.batch_size, max_crashes=config.max_crashes, edition_id=edition_id,
                        )  # fmt: skip
                    report.poisoned += len(poisoned)
                    if not claims:
                        break
                    self._send_batch(pool, connections, build, claims, report, on_progress, on_bounce)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        with database.transaction(self.engine) as session:
            report.finished_editions = ledger.finish_editions(session)
        return report

    def _send_batch(
        self,
        pool: ThreadPoolExecutor,
        connections: _Connections,
        build: Builder,
        claims: list[ledger.Claim],
        report: DrainReport,
        on_progress: Callable[[DrainReport], None] | None,
        on_bounce: Callable[[int], None] | None,
    ) -> None:
        sends: list[Future[None]] = []
        unsent: list[int] = []
        for claim, built in zip(claims, build(claims), strict=True):
            if self.stop.is_set():
                unsent.append(claim.delivery_id)
                continue
            if isinstance(built, str):
                self._record(claim, DeliveryStatus.FAILED, report, detail=built)
                continue
            sends.append(pool.submit(self._send_and_record, connections, built, report, on_bounce))
        for send in sends:
            send.result()
            if on_progress:
                on_progress(report)
        if unsent:
            with database.transaction(self.engine) as session:
                ledger.release(session, unsent, self.owner)

    def _send_and_record(
        self,
        connections: _Connections,
        outgoing: Outgoing,
        report: DrainReport,
        on_bounce: Callable[[int], None] | None,
    ) -> None:
        """Send one message and record the outcome at once, in this thread: the only messages a crash can
        leave sent-but-unrecorded are the one each connection has in hand."""
        if self.stop.is_set():
            with database.transaction(self.engine) as session:
                ledger.release(session, [outgoing.claim.delivery_id], self.owner)
            return
        try:
            self._rate.wait()
            self.mailer.send(outgoing.recipient, outgoing.message, connection=connections.current())
        except PermanentDeliveryError as error:
            self._record(outgoing.claim, DeliveryStatus.BOUNCED, report, code=error.code, detail=str(error))
            if on_bounce and outgoing.claim.subscriber_id is not None:
                on_bounce(outgoing.claim.subscriber_id)
        except DeliveryError as error:
            self._retry_later(outgoing.claim, error, report)
        else:
            self._record(outgoing.claim, DeliveryStatus.SENT, report, code=250)

    def _retry_later(self, claim: ledger.Claim, error: DeliveryError, report: DrainReport) -> None:
        config = self.settings.delivery
        now = self.clock()
        wait = min(config.retry_initial_seconds * 2**claim.attempts, config.retry_max_seconds)
        with database.transaction(self.engine) as session:
            started = ledger.edition(session, claim.edition_id)
        deadline = (started.created_at if started else now) + timedelta(hours=config.retry_deadline_hours)
        kind = "ambiguous" if isinstance(error, AmbiguousDeliveryError) else "temporary"
        if now + timedelta(seconds=wait) > deadline:
            self._record(
                claim, DeliveryStatus.FAILED, report, code=error.code, detail=f"gave up after the deadline: {error}"
            )
            return
        self._record(
            claim, DeliveryStatus.DEFERRED, report, code=error.code, detail=f"{kind}: {error}",
            next_attempt_at=now + timedelta(seconds=wait),
        )  # fmt: skip

    def _record(
        self,
        claim: ledger.Claim,
        status: DeliveryStatus,
        report: DrainReport,
        *,
        code: int | None = None,
        detail: str = "",
        next_attempt_at: datetime | None = None,
    ) -> None:
        with self._write_turn, self.engine.begin() as connection:  # outcome and attempt commit together
            kept = ledger.record(
                connection, claim.delivery_id, self.owner, self.clock(), status, code=code, detail=detail,
                next_attempt_at=next_attempt_at,
            )  # fmt: skip
        counter = {
            DeliveryStatus.SENT: "sent",
            DeliveryStatus.DEFERRED: "deferred",
            DeliveryStatus.BOUNCED: "bounced",
        }.get(status, "failed")
        with report.lock:
            if not kept:
                report.lost_leases += 1
            else:
                setattr(report, counter, getattr(report, counter) + 1)

    @contextlib.contextmanager
    def _single_sender_on_sqlite(self) -> Iterator[None]:
        """SQLite has no SKIP LOCKED: one sender at a time, refused clearly rather than left to collide."""
        url = make_url(self.settings.database.url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            yield
            return
        lock_path = Path(url.database).with_suffix(".sender.lock")
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SenderBusy(
                    f"another sender is already draining {url.database}: SQLite runs one sender at a time "
                    "(use PostgreSQL to send from several processes)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _Connections:
    """One connection (``connect()``) per sending thread, reused across messages, all closed at the end."""

    def __init__(self, connect: Callable[[], Transport]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._all: list[Transport] = []
        self._lock = threading.Lock()

    def current(self) -> Transport:
        transport: Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._connect()
            self._local.transport = transport
            with self._lock:
                self._all.append(transport)
        return transport

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *_exc: object) -> None:
        for transport in self._all:
            with contextlib.suppress(Exception):  # closing politely; a dead connection has nothing to close
                transport.close()


class _RateLimit:
    """At most ``per_second`` messages a second over all connections (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)
