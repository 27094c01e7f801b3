"""The bounce receiver: an LMTP (or SMTP) listener the organisation's MTA delivers the bounce address to.

Postfix hands a domain or an address to it with ``lmtp:inet:127.0.0.1:8026`` (a transport map entry), Exim with an
``lmtp`` or ``smtp`` transport. Every message accepted is given, as the bytes that came in and the envelope
recipients, to the ``handle`` function the caller passes; the reply waits for it, so a message is acknowledged
only once it has been handled. When ``handle`` raises, the message is refused for now (``451 4.3.0``): the MTA keeps
it and tries again later, and nothing is lost. A message over ``max_bytes`` is refused for good (``552``). Over
LMTP every recipient gets its own reply (RFC 2033), as the MTA expects.

The listener runs its own event loop in a thread of its own (aiosmtpd's protocol classes on an asyncio server);
``handle`` is called in one worker thread, one message at a time, so it may use a database session without locks
and the loop keeps answering other connections meanwhile. This module is the only user of aiosmtpd outside the
tests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from syndication.errors import SyndicationError

log = logging.getLogger(__name__)

#: What the receiver does with each message: the raw bytes and the envelope recipients. Raising refuses it for now.
Handle = Callable[[bytes, list[str]], None]

START_SECONDS = 10.0
# Lines longer than RFC 5321's 1000 octets are taken all the same: a bounce from a careless MTA (long HTML lines)
# must not be refused for good over its formatting.
_LINE_LIMIT = 256 * 1024
_TEMPORARY = "451 4.3.0 Could not process the message now; try again later"
_ACCEPTED = "250 2.0.0 Message accepted"


class _Handler:
    """aiosmtpd's handler: hands each message to ``handle`` in the worker thread and answers for it."""

    def __init__(self, handle: Handle, executor: ThreadPoolExecutor, lmtp: bool) -> None:
        self._handle = handle
        self._executor = executor
        self._lmtp = lmtp
        #: The open connections (their protocols), closed when the receiver stops.
        self.connections: set[SMTP] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._handle, raw, recipients)
        except Exception:
            log.exception("could not handle a message for %s (%d bytes): refused for now", recipients, len(raw))
            status = _TEMPORARY
        else:
            status = _ACCEPTED
        # LMTP (RFC 2033 §4.2): one reply per recipient that RCPT accepted, in order.
        return "\r\n".join([status] * len(recipients)) if self._lmtp and recipients else status


class _SMTP(SMTP):
    line_length_limit = _LINE_LIMIT

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.event_handler.connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.connections.discard(self)
        super().connection_lost(error)


class _LMTP(LMTP, _SMTP):
    async def push(self, status: Any) -> None:
        # aiosmtpd answers a refused DATA (too big, a line too long) once; LMTP wants one answer per recipient.
        text = str(status)
        if text.startswith(("552 ", "500 Line too long")) and self.envelope is not None and self.envelope.rcpt_tos:
            text = "\r\n".join([text] * len(self.envelope.rcpt_tos))
        await super().push(text)


class BounceReceiver:
    """An LMTP (``lmtp=True``, the default) or SMTP listener on ``host``:``port`` calling ``handle`` per message.

    ``port=0`` takes a free port, which :attr:`port` gives once started. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        handle: Handle,
        host: str = "127.0.0.1",
        port: int = 8026,
        *,
        lmtp: bool = True,
        max_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.handle = handle
        self.host = host
        self.port = port
        self.lmtp = lmtp
        self.max_bytes = max_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._handler: _Handler | None = None

    def start(self) -> None:
        """Listen, in a thread of its own; returns once the port is open (SyndicationError when it cannot be)."""
        if self._thread is not None:
            raise RuntimeError("the bounce receiver is already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bounce-handle")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(self._listen(loop))
            except (TimeoutError, OSError) as error:
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"bounce-receiver-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(START_SECONDS) or failure:
            reason = failure[0] if failure else "timed out"
            self._thread.join(START_SECONDS)
            self._reset()
            raise SyndicationError(f"the bounce receiver cannot listen on {self.host}:{self.port}: {reason}")
        log.info("bounce receiver listening on %s:%d (%s)", self.host, self.port, "LMTP" if self.lmtp else "SMTP")

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractServer:
        assert self._executor is not None
        handler = self._handler = _Handler(self.handle, self._executor, self.lmtp)
        protocol = _LMTP if self.lmtp else _SMTP

        def factory() -> SMTP:
            return protocol(
                handler,
                data_size_limit=self.max_bytes,
                hostname=None if self.host in ("0.0.0.0", "::") else self.host,  # noqa: S104 - compared, not bound
                ident="syndication bounce receiver",
                enable_SMTPUTF8=True,
                timeout=300,
                loop=loop,
            )

        server = await loop.create_server(factory, host=self.host, port=self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    def stop(self) -> None:
        """Stop listening, let the message being handled finish, and end the thread."""
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or thread is None:
            return
        if server is not None and not loop.is_closed():
            handler = self._handler

            async def close() -> None:
                server.close()
                for connection in list(handler.connections if handler is not None else ()):
                    if connection.transport is not None:
                        connection.transport.close()
                await server.wait_closed()
                current = asyncio.current_task()
                pending = [task for task in asyncio.all_tasks() if task is not current]
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(START_SECONDS)
            except (TimeoutError, RuntimeError):
                log.warning("the bounce receiver did not close its connections in time")
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_SECONDS)
        self._reset()

    def _reset(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._loop = self._server = self._thread = self._executor = self._handler = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
