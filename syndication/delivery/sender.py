"""Draining the delivery queue: claim a batch, have each message built, send it through the Mailer, record what
happened.

Every message leaves through the service's one :class:`~syndication.delivery.mailer.Mailer`, which signs it and
owns the transport, over ``[delivery] connections`` connections it opens (one per sending thread).

Nothing is lost and nothing is sent twice, within one rule: a delivery is marked sent only after the transport
accepted it (the SMTP server's final 250), and no later than the transaction that marks the next message of the
same connection in flight, before that message's first byte (or at the end of its batch). A sender killed
between the two can have the messages sent and not recorded at that moment sent again by the next run (with the
same Message-ID, so receivers can drop the copy): at most one per connection, ``connections`` messages.

Batched without weakening that. The in-flight marks that the connections ask for at the same moment, and every
outcome accepted since the last commit, commit in one transaction (``_GroupCommit``: whoever asks first commits
for all who wait); each connection still waits for its own mark before it sends. On PostgreSQL that transaction
is one statement on a connection the drain keeps in autocommit (``_CommitLine``, ``ledger.record_sent_and_begin``):
one round trip per group. The next batch is claimed and
built while the current one is being sent (pipelined, one batch sent at a time).

A lease is a promise kept. Claims are leases with a fencing token (``store.ledger``). While it works, a sender
renews the leases it holds (a heartbeat thread, every third of ``lease_seconds``) and notices those it lost; just
before a message's first byte goes out it marks the delivery in flight, which it may only do while it still
holds the claim, so a row whose lease it lost is never sent by it, and its outcome is recorded only under the
same token, so a late sender never overwrites a newer claim's outcome. Lost leases are counted
(``DrainReport.lost_leases``). Rows held by a dead sender return to the queue when the lease runs out; a crash
counts only against the message that was in flight, and a delivery whose sender died ``max_crashes`` times while
sending it is set aside as poisoned. Every way a drain ends (its ``stop`` set, SIGTERM turned into that by a
driver, an exception unwinding it, the queue empty) hands back at once the claims it has not tried.

An ambiguous send (no reply after the final dot: a timeout or a dropped connection; the relay may have the
message) is retried with the same Message-ID at most ``[delivery] ambiguous_retries`` times, then recorded as
``unknown``, never resent by itself. A relay consistently slower than the timeout (``SLOW_RELAY_TIMEOUTS``
timeouts after the message in a row, or one per connection if there are more) pauses the edition with that
reason instead of multiplying copies.

Only a refusal about the recipient counts against them (``syndication.core.bounces``): their address (a hard
bounce: the delivery is ``bounced``) or their mailbox for now (a soft one: ``failed``, as is a 4xx at RCPT TO
whose retries ran out); each goes to the ``on_bounce`` hook with what it says. A refusal of the sending side
(:class:`~syndication.errors.SendingSideError`: our sender, our content, relaying, our credentials, the relay's
own trouble; or a ConfigError met while sending) records nothing against anyone: the claim goes back to the
queue unsent, the edition is paused with the refusal as its reason (``core.editions.pause_for``), and nothing
more of it is sent by this drain; ``DrainReport.paused_editions`` says so. Resuming the edition retries it all.

The breaker. A relay that is misconfigured can also refuse every recipient with the same reply ("550 5.1.1 User
unknown" for all): early in the sending of an edition, such refusals are held back rather than recorded. While
no delivery of an edition had been tried before this drain, its first ``BREAKER_WINDOW`` outcomes (sent,
deferred, refused) are weighed together, once that many are in or, at the end of the drain, on those it saw:
when at least ``BREAKER_SHARE`` of at least ``BREAKER_MINIMUM`` of them are refusals about the recipient with the
same reply (the same code, enhanced status and text, the addresses in it aside), the edition is paused
("breaker: 20 of 20 recipients refused with the same reply: ...") and the held deliveries go back to the queue
with that attempt noted, marking nobody. Otherwise they are recorded and reported to ``on_bounce`` as they
would have been at once. The breaker trips at most once per edition: after it, the edition has been tried, so an
editor who resumes it sends it without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from syndication.config import Settings
from syndication.core.bounces import Fault, Stage
from syndication.core.editions import EditionRefused, pause_for
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.delivery.mailer import Mailer
from syndication.delivery.transport import Transport
from syndication.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    SenderBusy,
    SendingSideError,
    TemporaryDeliveryError,
)
from syndication.store import database, ledger

log = logging.getLogger(__name__)

# The breaker (see the module's description): the first outcomes of an edition weighed together, the fewest it
# decides on, and the share of identical refusals about recipients that trips it.
BREAKER_WINDOW: Final = 20
BREAKER_MINIMUM: Final = 10
BREAKER_SHARE: Final = 0.8
# Timeouts after the message, in a row (over all connections), that pause an edition: the relay is slower than
# the timeout, and each retry would be another copy.
SLOW_RELAY_TIMEOUTS: Final = 3

_ADDRESS_IN_REPLY = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Outgoing:
    """One built message (not yet sealed: the Mailer signs it as it leaves) for one claimed delivery."""

    claim: ledger.Claim
    recipient: str
    message: bytes
    envelope_sender: str | None = None  # its own MAIL FROM (a VERP address), else the Mailer's


@dataclass(frozen=True)
class Bounce:
    """A refusal about a recipient, for the bounce hook: whose delivery of which edition, what it says about them
    (``fault``: "address", a hard bounce; "mailbox", a soft one), the enhanced status, reply code and the error."""

    subscriber_id: int
    delivery_id: int
    edition_id: int
    fault: str
    status: str | None
    code: int | None
    diagnostic: str


# What is told of each refusal about a recipient.
OnBounce = Callable[[Bounce], None]


@dataclass
class DrainReport:
    """What a drain did. ``unknown``: deliveries given up because the relay never answered after the message
    (``ambiguous_retries`` resends spent); ``lost_leases``: claims this sender found taken by another (not sent
    or not recorded by it); ``paused_editions``: the editions this drain paused, with the reason (one line
    each); ``held_back``: deliveries given back to the queue unsent because their edition was paused;
    ``released``: claims handed back untried because the drain stopped."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    bounced: int = 0
    unknown: int = 0
    poisoned: int = 0
    lost_leases: int = 0
    held_back: int = 0
    released: int = 0
    finished_editions: list[int] = field(default_factory=list)
    paused_editions: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def handled(self) -> int:
        """Deliveries this drain dealt with."""
        return self.sent + self.deferred + self.failed + self.bounced + self.unknown


# Builds the messages of a batch of claims: each a message, or why none can be built.
Builder = Callable[[list[ledger.Claim]], "list[Outgoing | str]"]


@dataclass(frozen=True)
class _Final:
    """A final outcome not yet recorded: a refusal (or a retry deadline) that goes to the bounce hook."""

    claim: ledger.Claim
    status: DeliveryStatus
    code: int | None
    detail: str
    bounce: Bounce | None
    reply: tuple[int | None, str | None, str]  # what makes two refusals "the same reply"
    shown: str  # the reply as the breaker names it


@dataclass
class _Breaker:
    """One edition's breaker in one drain: holding its refusals until it has decided."""

    holding: bool
    seen: int = 0
    held: list[_Final] = field(default_factory=list)


class _Held:
    """The claims a drain holds (claimed, outcome not yet recorded nor handed back), for its heartbeat to renew
    and for the end of the drain to hand back; thread-safe."""

    def __init__(self) -> None:
        self._claims: dict[int, ledger.Claim] = {}
        self._lock = threading.Lock()

    def add(self, claims: list[ledger.Claim]) -> None:
        with self._lock:
            self._claims.update((claim.delivery_id, claim) for claim in claims)

    def drop(self, delivery_ids: Iterable[int]) -> None:
        """Forget claims whose outcome was recorded or that were handed back."""
        with self._lock:
            for delivery_id in delivery_ids:
                self._claims.pop(delivery_id, None)

    def lose(self, delivery_ids: Iterable[int]) -> int:
        """Forget claims found lost to another sender; returns how many were still held (to count each once)."""
        with self._lock:
            return sum(self._claims.pop(delivery_id, None) is not None for delivery_id in delivery_ids)

    def all(self) -> list[ledger.Claim]:
        with self._lock:
            return list(self._claims.values())

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._claims)


@dataclass
class _Run:
    """The state of one drain, shared by its sending threads (under ``lock``)."""

    report: DrainReport
    on_bounce: OnBounce | None
    breakers: dict[int, _Breaker] = field(default_factory=dict)
    halted: set[int] = field(default_factory=set)  # editions paused during this drain: nothing more is sent
    held: _Held = field(default_factory=_Held)
    timeouts: int = 0  # timeouts after the message in a row, over all connections
    # Messages the relay accepted whose outcome is not recorded yet, with when it accepted them: recorded with the
    # next message marked in flight, or at the end of the batch (at most one per connection at any time).
    pending: list[tuple[ledger.Claim, datetime]] = field(default_factory=list)
    commits: _GroupCommit = field(init=False)
    line: _CommitLine | None = None  # the group commit's own connection (PostgreSQL)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Batch:
    """A batch handed to the sending threads: their futures, and the claims to give back once it is over."""

    sends: list[Future[None]] = field(default_factory=list)
    held: list[ledger.Claim] = field(default_factory=list)
    unsent: list[ledger.Claim] = field(default_factory=list)


@dataclass(eq=False)
class _Ask:
    """One thread's request to the group commit, and its answer once committed (held, or why it failed)."""

    claim: ledger.Claim | None
    answer: bool | BaseException | None = None


class _GroupCommit:
    """Commits the in-flight marks that several sending threads ask for at the same moment in one transaction
    (``commit``): the first to ask commits for everyone waiting, the others wait for it, and whoever asks
    meanwhile is in the next group. No thread sends before its own mark committed."""

    def __init__(self, commit: Callable[[list[ledger.Claim]], set[int]], *, at_once: int = 1) -> None:
        self._commit = commit
        self._changed = threading.Condition()
        self._waiting: list[_Ask] = []
        self._busy = 0  # commits under way
        self._at_once = at_once  # at most this many at a time (each on a connection of its own)

    def submit(self, claim: ledger.Claim | None) -> bool:
        """Mark ``claim`` in flight (None: only record what is pending) with whatever else is asked now; whether
        it is marked (False: its lease was lost). Raises what the commit raised."""
        ask = _Ask(claim)
        with self._changed:
            self._waiting.append(ask)
            while ask.answer is None and ask in self._waiting and self._busy >= self._at_once:
                self._changed.wait()
            group: list[_Ask] = []
            if ask.answer is None and ask in self._waiting:  # a commit is free: this thread commits for all waiting
                self._busy += 1
                group, self._waiting = self._waiting, []
            else:
                while ask.answer is None:  # another thread took it into the commit it is making
                    self._changed.wait()
        if group:
            try:
                marked = self._commit([asked.claim for asked in group if asked.claim is not None])
                answers: list[bool | BaseException] = [
                    asked.claim is None or asked.claim.delivery_id in marked for asked in group
                ]
            except BaseException as error:  # noqa: BLE001 (every request of the group raises it)
                answers = [error] * len(group)
            with self._changed:
                for asked, answer in zip(group, answers, strict=True):
                    asked.answer = answer
                self._busy -= 1
                self._changed.notify_all()
        if isinstance(ask.answer, BaseException):
            raise ask.answer
        return bool(ask.answer)


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
        on_bounce: OnBounce | None = None,
    ) -> DrainReport:
        """Send every due delivery (of one edition, or all); returns when none is due or ``stop`` is set.

        Refusals about a recipient go to ``on_bounce`` (after the breaker had its say); an edition whose sending
        the relay refuses is paused and named in the report's ``paused_editions``. Raises SenderBusy when another
        sender drains this SQLite store, ConfigError (before claiming anything) when the DKIM key cannot be used.
        However it ends (an exception included), the claims it has not tried go back to the queue at once.
        """
        config = self.settings.delivery
        run = _Run(DrainReport(), on_bounce)
        run.commits = _GroupCommit(lambda claims: self._commit(run, claims))
        if self.engine.dialect.name == "postgresql":
            run.line = _CommitLine(self.engine)
        self.mailer.check()  # a DKIM key that cannot be read would fail every message: refuse before claiming any
        settled = False
        with self._single_sender_on_sqlite(), _Connections(self.mailer.connect) as connections:
            pool = ThreadPoolExecutor(max_workers=config.connections, thread_name_prefix="smtp")
            heartbeat = _Heartbeat(self, run)
            try:
                # Pipelined: the next batch is claimed and built while the one before it is being sent (its
                # messages go out on the pool's threads), so building overlaps sending. One batch is sent at a
                # time, in order; the next is only submitted once the one before is over.
                sending: _Batch | None = None
                while not self.stop.is_set():
                    claims = self._claim(run, edition_id)
                    if not claims:
                        break
                    heartbeat.start()
                    built = build(claims)
                    if sending is not None:
                        self._finish_batch(run, sending, on_progress)
                    sending = self._submit_batch(pool, connections, claims, built, run)
                if sending is not None:
                    self._finish_batch(run, sending, on_progress)
                pool.shutdown(wait=True)
                self._flush(run)
                self._settle_breakers(run, apply=True)
                settled = True
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # the messages in flight finish and are recorded
                try:
                    self._flush(run)  # what was sent is recorded before anything is handed back
                except (SQLAlchemyError, OSError) as error:  # the store is gone: in flight, resent after the lease
                    log.warning("could not record %d sent messages: %s", len(run.pending), error,
                                extra={"event": "record-failed"})  # fmt: skip
                if not settled:  # stopped by an error: what the breaker held goes back, marking nobody
                    with contextlib.suppress(Exception):
                        self._settle_breakers(run, apply=False)
                heartbeat.stop()
                if run.line is not None:
                    run.line.close()
                self._hand_back(run)
        with database.transaction(self.engine) as session:
            run.report.finished_editions = ledger.finish_editions(session, self.clock())
        return run.report

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.delivery.lease_seconds)

    def _hand_back(self, run: _Run) -> None:
        """Give back every claim this drain still holds that it has not tried (one in flight whose outcome could
        not be recorded stays: its lease runs out and the crash counts against it)."""
        left = run.held.all()
        if not left:
            return
        try:
            with self._write_turn, database.transaction(self.engine) as session:
                released = ledger.release(session, left, self.owner)
        except (SQLAlchemyError, OSError) as error:  # the store is gone: the leases run out, no crash counted
            log.warning("could not hand back %d claims: %s", len(left), error, extra={"event": "release-failed"})
            return
        run.held.drop(claim.delivery_id for claim in left)
        with run.report.lock:
            run.report.released += released

    def _renew(self, run: _Run) -> None:
        """The heartbeat's beat: extend the leases still held, and count (once) those lost to another sender."""
        held = run.held.all()
        if not held:
            return
        with self._write_turn, database.transaction(self.engine) as session:
            lost = ledger.renew(session, held, self.owner, self.clock(), lease=self._lease())
        self._lost(run, lost)

    def _lost(self, run: _Run, delivery_ids: Iterable[int]) -> None:
        """Claims found taken by another sender: forgotten (never sent nor recorded by this one), counted once."""
        count = run.held.lose(delivery_ids)
        if count:
            with run.report.lock:
                run.report.lost_leases += count
            log.warning("lost the lease of %d deliveries to another sender", count, extra={"event": "lease-lost"})

    def _claim(self, run: _Run, edition_id: int | None) -> list[ledger.Claim]:
        """Lease the next batch (in this sender's write turn: on SQLite, the previous batch may be recording)."""
        config = self.settings.delivery
        with self._write_turn, database.transaction(self.engine) as session:
            claims, poisoned = ledger.claim(
                session, self.owner, self.clock(), lease=self._lease(), limit=config.batch_size,
                max_crashes=config.max_crashes, edition_id=edition_id, holding=run.held.ids(),
            )  # fmt: skip
            # Known before the commit: an unwinding drain hands back whatever it may hold.
            run.held.add(claims)
            for new in {claim.edition_id for claim in claims} - set(run.breakers):
                # Armed only at an edition's very start: once tried, it has had its breaker.
                run.breakers[new] = _Breaker(holding=not ledger.attempted(session, new))
        with run.report.lock:
            run.report.poisoned += len(poisoned)
        return claims

    def _submit_batch(
        self,
        pool: ThreadPoolExecutor,
        connections: _Connections,
        claims: list[ledger.Claim],
        built: list[Outgoing | str],
        run: _Run,
    ) -> _Batch:
        """Hand each built message of a batch to the sending threads; those that cannot be sent are recorded as
        failed, and those of an edition paused meanwhile (or all, once stopping) are kept for ``_finish_batch`` to
        give back."""
        batch = _Batch()
        for claim, message in zip(claims, built, strict=True):
            if self._halted(run, claim.edition_id):  # paused by the relay's refusal of an earlier message
                batch.held.append(claim)
                continue
            if self.stop.is_set():
                batch.unsent.append(claim)
                continue
            if isinstance(message, str):
                self._record(run, claim, DeliveryStatus.FAILED, detail=message)
                continue
            batch.sends.append(pool.submit(self._send_and_record, connections, message, run))
        return batch

    def _finish_batch(self, run: _Run, batch: _Batch, on_progress: Callable[[DrainReport], None] | None) -> None:
        """Wait for a batch's messages, record what is still to record, and give back what was not tried."""
        for send in batch.sends:
            send.result()
        self._flush(run)
        if on_progress:
            for _ in batch.sends:
                on_progress(run.report)
        self._give_back(run, batch.held, count=True)
        self._give_back(run, batch.unsent)

    def _send_and_record(self, connections: _Connections, outgoing: Outgoing, run: _Run) -> None:
        """Send one message and record the outcome at once, in this thread: the only messages a crash can
        leave sent-but-unrecorded are the one each connection has in hand."""
        claim = outgoing.claim
        self._rate.wait()
        if self.stop.is_set() or self._halted(run, claim.edition_id):
            self._give_back(run, [claim], count=not self.stop.is_set())
            return
        if not self._begin(run, claim):  # the lease went to another sender: it is theirs to send
            return
        try:
            self.mailer.send(
                outgoing.recipient, outgoing.message, connection=connections.current(),
                envelope_sender=outgoing.envelope_sender,
            )  # fmt: skip
        except AmbiguousDeliveryError as error:
            self._ambiguous(run, claim, error)
            return
        except (SendingSideError, ConfigError) as error:
            self._relay_answered(run)
            self._halt(run, claim.edition_id, str(error), [claim])
        except PermanentDeliveryError as error:
            self._relay_answered(run)
            self._refused(run, claim, error)
        except DeliveryError as error:
            self._relay_answered(run)
            self._retry_later(run, claim, error)
        else:
            self._relay_answered(run)
            # Recorded in the transaction that marks this sender's next message in flight (or at the batch's
            # end): never later than the next message's first byte, so a crash still leaves at most one message
            # per connection sent and not recorded, as when each outcome had a transaction of its own.
            with run.lock:
                run.pending.append((claim, self.clock()))

    def _begin(self, run: _Run, claim: ledger.Claim) -> bool:
        """Mark the claim in flight, if this sender still holds it; a lost lease is counted and not sent. The mark
        commits with those of the other connections asking at the same moment and with the messages sent since the
        last commit (``run.pending``): one transaction for many messages, none sent before its mark committed."""
        held = run.commits.submit(claim)
        if not held:
            self._lost(run, [claim.delivery_id])
        return held

    def _flush(self, run: _Run) -> None:
        """Record the messages sent and not yet recorded (a batch's last ones), in one transaction."""
        run.commits.submit(None)

    def _commit(self, run: _Run, claims: list[ledger.Claim]) -> set[int]:
        """The group commit's one transaction: record every pending sent message, mark ``claims`` in flight;
        returns the ids of those marked."""
        with run.lock:
            pending, run.pending = run.pending, []
        if not pending and not claims:
            return set()
        lease = self._lease()

        def record_and_mark(connection: Connection) -> tuple[set[int], set[int]]:
            return ledger.record_sent_and_begin(connection, pending, claims, self.owner, self.clock(), lease=lease)

        try:
            if run.line is not None:  # PostgreSQL: one statement on the group commit's own connection
                kept, marked = run.line.run(record_and_mark)
            else:
                with self._write_turn, self.engine.begin() as connection:
                    kept, marked = record_and_mark(connection)
        except BaseException:
            with run.lock:  # not recorded: still pending (reported, or recorded by a later commit)
                run.pending[:0] = pending
            raise
        self._recorded(run, pending, [claim.delivery_id in kept for claim, _ in pending])
        return marked

    def _recorded(self, run: _Run, pending: list[tuple[ledger.Claim, datetime]], kept: list[bool]) -> None:
        """Count sent messages once their outcome committed (a lease lost meanwhile counted as such)."""
        lost = [claim.delivery_id for (claim, _), ok in zip(pending, kept, strict=True) if not ok]
        if lost:
            self._lost(run, lost)
        done = [claim for (claim, _), ok in zip(pending, kept, strict=True) if ok]
        if not done:
            return
        run.held.drop(claim.delivery_id for claim in done)
        with run.report.lock:
            run.report.sent += len(done)
        for claim in done:
            self._observe(run, claim.edition_id)

    # No answer after the message -----------------------------------------------------------------------------

    def _relay_answered(self, run: _Run) -> None:
        with run.lock:
            run.timeouts = 0

    def _ambiguous(self, run: _Run, claim: ledger.Claim, error: AmbiguousDeliveryError) -> None:
        """The relay may have the message: retry it later with the same Message-ID, at most ``ambiguous_retries``
        times, then record it as unknown; a relay that keeps timing out pauses the edition."""
        config = self.settings.delivery
        now = self.clock()
        with database.transaction(self.engine) as session:
            before = ledger.ambiguous_attempts(session, claim.delivery_id)
            started = ledger.edition(session, claim.edition_id)
        since = (started.sending_since or started.created_at) if started else now
        deadline = since + timedelta(hours=config.retry_deadline_hours)
        wait = min(config.retry_initial_seconds * 2**claim.attempts, config.retry_max_seconds)
        if before >= config.ambiguous_retries or now + timedelta(seconds=wait) > deadline:
            sends = "once" if before == 0 else f"{before + 1} times"
            detail = f"{ledger.AMBIGUOUS_DETAIL}no answer after the message, sent {sends}; not resent: {error}"
            self._record(run, claim, DeliveryStatus.UNKNOWN, code=error.code, detail=detail)
        else:
            self._record(
                run, claim, DeliveryStatus.DEFERRED, code=error.code, detail=f"{ledger.AMBIGUOUS_DETAIL}{error}",
                next_attempt_at=now + timedelta(seconds=wait),
            )  # fmt: skip
        self._observe(run, claim.edition_id)
        if not _timed_out(error):  # a dropped connection says nothing of the relay's pace
            self._relay_answered(run)
            return
        limit = max(SLOW_RELAY_TIMEOUTS, self.settings.delivery.connections)
        with run.lock:
            run.timeouts += 1
            slow = run.timeouts >= limit
            if slow:
                run.timeouts = 0
        if slow:
            timeout = self.settings.smtp.timeout_seconds
            reason = (
                f"the relay did not answer within timeout_seconds ({timeout:g} s) after {limit} messages in a row;"
                f" resend nothing until it is faster or the timeout longer: {error}"
            )
            self._halt(run, claim.edition_id, reason, [])

    # Refusals about the recipient, and the breaker -----------------------------------------------------------

    def _refused(self, run: _Run, claim: ledger.Claim, error: PermanentDeliveryError) -> None:
        """A refusal about this recipient: bounced (their address) or failed (their mailbox, or neither)."""
        status = DeliveryStatus.BOUNCED if error.fault == Fault.ADDRESS else DeliveryStatus.FAILED
        bounce = self._bounce(claim, error, error.fault)
        self._settle(run, _final(claim, status, error, str(error), bounce))

    def _retry_later(self, run: _Run, claim: ledger.Claim, error: DeliveryError) -> None:
        config = self.settings.delivery
        now = self.clock()
        wait = min(config.retry_initial_seconds * 2**claim.attempts, config.retry_max_seconds)
        with database.transaction(self.engine) as session:
            started = ledger.edition(session, claim.edition_id)
        # From when the edition last started sending (approved or resumed): a pause or a wait for approval does not
        # use up the time a recipient's server is given.
        since = (started.sending_since or started.created_at) if started else now
        deadline = since + timedelta(hours=config.retry_deadline_hours)
        kind = "ambiguous" if isinstance(error, AmbiguousDeliveryError) else "temporary"
        if now + timedelta(seconds=wait) > deadline:
            # A recipient's server that kept saying "later" until the deadline: their mailbox, for now.
            about_them = isinstance(error, TemporaryDeliveryError) and error.stage == Stage.RCPT
            bounce = self._bounce(claim, error, Fault.MAILBOX) if about_them else None
            detail = f"gave up after the deadline: {error}"
            self._settle(run, _final(claim, DeliveryStatus.FAILED, error, detail, bounce))
            return
        self._record(
            run, claim, DeliveryStatus.DEFERRED, code=error.code, detail=f"{kind}: {error}",
            next_attempt_at=now + timedelta(seconds=wait),
        )  # fmt: skip
        self._observe(run, claim.edition_id)

    @staticmethod
    def _bounce(claim: ledger.Claim, error: DeliveryError, fault: str) -> Bounce | None:
        if claim.subscriber_id is None or fault not in (Fault.ADDRESS, Fault.MAILBOX):
            return None
        return Bounce(
            claim.subscriber_id, claim.delivery_id, claim.edition_id, str(fault), error.status, error.code, str(error)
        )

    def _settle(self, run: _Run, final: _Final) -> None:
        """Record a final outcome now, or hold it for the edition's breaker, or give it back (edition paused)."""
        edition_id = final.claim.edition_id
        with run.lock:
            halted = edition_id in run.halted
            breaker = run.breakers.get(edition_id)
            holding = not halted and breaker is not None and breaker.holding
            if holding:
                assert breaker is not None
                breaker.held.append(final)
                breaker.seen += 1
                full = breaker.seen >= BREAKER_WINDOW
        if halted:
            self._give_back(run, [final.claim], count=True, refused=True)
        elif not holding:
            self._apply(run, final)
        elif full:
            self._decide(run, edition_id, apply=True)

    def _observe(self, run: _Run, edition_id: int) -> None:
        """Count an outcome that was recorded at once (sent, deferred) in the edition's breaker window."""
        with run.lock:
            breaker = run.breakers.get(edition_id)
            if breaker is None or not breaker.holding:
                return
            breaker.seen += 1
            full = breaker.seen >= BREAKER_WINDOW
        if full:
            self._decide(run, edition_id, apply=True)

    def _decide(self, run: _Run, edition_id: int, *, apply: bool) -> None:
        """The breaker of ``edition_id`` decides: trip (pause, give the held deliveries back with the attempt
        noted) or let the held outcomes be recorded; with ``apply`` False, give them back without deciding."""
        with run.lock:
            breaker = run.breakers.get(edition_id)
            if breaker is None or not breaker.holding:
                return
            breaker.holding = False
            held, seen, breaker.held = breaker.held, breaker.seen, []
            halted = edition_id in run.halted or not apply
            trip = None if halted else _trip(held, seen)
            if trip is not None:
                run.halted.add(edition_id)  # from now on, nothing more of it is sent or recorded as refused
        if halted:
            self._give_back(run, [final.claim for final in held], count=True, refused=True)
            return
        if trip is None:
            for final in held:
                self._apply(run, final)
            return
        reason, tripping = trip
        self._pause(run, edition_id, reason)
        detail = f"held back, nobody marked: {reason}"
        with self._write_turn, database.transaction(self.engine) as session:
            ledger.hold_back(
                session, [final.claim for final in tripping], self.owner, self.clock(),
                code=tripping[0].code, detail=detail,
            )  # fmt: skip
        run.held.drop(final.claim.delivery_id for final in tripping)
        with run.report.lock:
            run.report.held_back += len(tripping)
        others = [final for final in held if final not in tripping]
        self._give_back(run, [final.claim for final in others], count=True, refused=True)

    def _settle_breakers(self, run: _Run, *, apply: bool) -> None:
        for edition_id in list(run.breakers):
            self._decide(run, edition_id, apply=apply)

    def _apply(self, run: _Run, final: _Final) -> None:
        """Record a final outcome and tell the bounce hook."""
        kept = self._record(run, final.claim, final.status, code=final.code, detail=final.detail)
        if kept and final.bounce is not None and run.on_bounce is not None:
            run.on_bounce(final.bounce)

    # Refusals of the sending side ----------------------------------------------------------------------------

    def _halted(self, run: _Run, edition_id: int) -> bool:
        with run.lock:
            return edition_id in run.halted

    def _halt(self, run: _Run, edition_id: int, reason: str, claims: list[ledger.Claim]) -> None:
        """The relay refused our side (or is slower than the timeout): pause the edition with ``reason``, give
        ``claims`` (refused: nothing of them went out) and what its breaker held back to the queue unsent, and
        send nothing more of it in this drain."""
        with run.lock:
            first = edition_id not in run.halted
            run.halted.add(edition_id)
            breaker = run.breakers.get(edition_id)
            held: list[_Final] = []
            if breaker is not None and breaker.holding:
                breaker.holding = False
                held, breaker.held = breaker.held, []
        if first:
            self._pause(run, edition_id, reason)
        self._give_back(run, [*claims, *(final.claim for final in held)], count=True, refused=True)

    def _pause(self, run: _Run, edition_id: int, reason: str) -> None:
        """Pause the edition with ``reason`` (``core.editions.pause_for``), if it is still sending."""
        with self._write_turn, database.transaction(self.engine) as session:
            edition = ledger.edition(session, edition_id)
            if edition is None:
                return
            try:
                status, line = pause_for(edition, reason)
            except EditionRefused:  # an editor paused or cancelled it meanwhile: theirs is the last word
                return
            paused = ledger.set_edition_status(
                session, edition_id, status, self.clock(), reason=line, only_from=EditionStatus.SENDING
            )
        if paused:
            with run.report.lock:
                run.report.paused_editions[edition_id] = line

    def _give_back(self, run: _Run, claims: list[ledger.Claim], *, count: bool = False, refused: bool = False) -> None:
        """Return claims to the queue unsent, their attempts unspent (``count``: as held back, their edition being
        paused; ``refused``: the relay refused them, so none of them went out though they were in flight)."""
        if not claims:
            return
        with self._write_turn, database.transaction(self.engine) as session:
            released = ledger.release(session, claims, self.owner, refused=refused)
        run.held.drop(claim.delivery_id for claim in claims)
        with run.report.lock:
            if count:
                run.report.held_back += released
            else:
                run.report.released += released

    def _record(
        self,
        run: _Run,
        claim: ledger.Claim,
        status: DeliveryStatus,
        *,
        code: int | None = None,
        detail: str = "",
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Record an outcome under the claim's token, with the sent messages still pending (``run.pending``);
        False (and a lost lease counted) when another sender holds the delivery now."""
        with run.lock:
            pending, run.pending = run.pending, []
        try:
            with self._write_turn, self.engine.begin() as connection:  # outcome and attempt commit together
                sent = ledger.record_sent(connection, pending, self.owner)
                kept = ledger.record(
                    connection, claim, self.owner, self.clock(), status, code=code, detail=detail,
                    next_attempt_at=next_attempt_at,
                )  # fmt: skip
        except BaseException:
            with run.lock:
                run.pending[:0] = pending
            raise
        self._recorded(run, pending, [claimed.delivery_id in sent for claimed, _ in pending])
        if not kept:
            self._lost(run, [claim.delivery_id])
            return False
        run.held.drop([claim.delivery_id])
        counter = {
            DeliveryStatus.SENT: "sent",
            DeliveryStatus.DEFERRED: "deferred",
            DeliveryStatus.BOUNCED: "bounced",
            DeliveryStatus.UNKNOWN: "unknown",
        }.get(status, "failed")
        with run.report.lock:
            setattr(run.report, counter, getattr(run.report, counter) + 1)
        return kept

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


class _CommitLine:
    """The group commit's own database connections for one drain (PostgreSQL), in autocommit: each group is one
    statement (``ledger.record_sent_and_begin``), so one round trip and one transaction, with no pool checkout,
    liveness ping, BEGIN or COMMIT around it. A connection serves one group at a time; as many are kept as groups
    commit at once.

    After an error the connection it came from is closed, and so is one left unused for ``IDLE_SECONDS``: the next
    group checks out another from the pool, whose pre-ping replaces a connection the server dropped meanwhile, as
    before."""

    IDLE_SECONDS: Final = 5.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._idle: list[tuple[Connection, float]] = []  # with when each was last used
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], _T]) -> _T:
        """``work`` on a connection of the line (opened if need be); what it returns, or what it raised."""
        connection: Connection | None = None
        stale: list[Connection] = []
        with self._lock:
            while self._idle and connection is None:
                candidate, used = self._idle.pop()
                if time.monotonic() - used > self.IDLE_SECONDS:
                    stale.append(candidate)
                else:
                    connection = candidate
        for old in stale:
            _close_quietly(old)
        if connection is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            result = work(connection)
            connection.commit()  # nothing to send in autocommit; ends SQLAlchemy's own transaction
        except BaseException:
            _close_quietly(connection)
            raise
        with self._lock:
            self._idle.append((connection, time.monotonic()))
        return result

    def close(self) -> None:
        """Give the connections back to the pool (at the drain's end)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _used in idle:
            _close_quietly(connection)


def _close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):  # a broken connection is dropped by the pool all the same
        connection.close()


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


class _Heartbeat:
    """Renews a drain's leases every third of ``lease_seconds`` in a thread of its own, from its first claim until
    ``stop``; a beat that fails (the store unreachable for a moment) is logged and the next one tries again."""

    def __init__(self, sender: Sender, run: _Run) -> None:
        self._sender = sender
        self._run = run
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        every = self._sender.settings.delivery.lease_seconds / 3
        while not self._done.wait(every):
            try:
                self._sender._renew(self._run)
            except (SQLAlchemyError, OSError) as error:  # the leases hold until lease_until; the next beat tries
                log.warning("could not renew the leases: %s", error, extra={"event": "lease-renewal-failed"})


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


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` came of a timeout (anywhere in its chain of causes: smtplib turns one into a
    disconnection)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TimeoutError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _final(
    claim: ledger.Claim, status: DeliveryStatus, error: DeliveryError, detail: str, bounce: Bounce | None
) -> _Final:
    """A final outcome of ``error``, with the reply that the breaker compares (addresses left out)."""
    said = error.reply or error.reason
    shown = " ".join(_ADDRESS_IN_REPLY.sub("<address>", said).split())
    key = (error.code, error.status, shown.casefold())
    named = f"{error.code} {shown}" if error.code is not None else shown
    return _Final(claim, status, error.code, detail, bounce, key, named)


def _trip(held: list[_Final], seen: int) -> tuple[str, list[_Final]] | None:
    """The breaker's verdict on an edition's first ``seen`` outcomes, of which ``held`` are refusals about the
    recipient: the reason and the refusals that trip it, or None when it does not trip."""
    if seen < BREAKER_MINIMUM or not held:
        return None
    replies = Counter(final.reply for final in held)
    reply, count = replies.most_common(1)[0]
    if count < BREAKER_SHARE * seen:
        return None
    tripping = [final for final in held if final.reply == reply]
    reason = f"breaker: {count} of {seen} recipients refused with the same reply: {tripping[0].shown}"
    return reason, tripping
