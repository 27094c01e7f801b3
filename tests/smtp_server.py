"""A real SMTP server for tests (aiosmtpd on 127.0.0.1), whose misbehaviour each test scripts.

    with smtp_server(defer={"ana@example.org": 1}, reject=["bounce@example.org"]) as server:
        send_one(server.settings(), "news@example.org", "ana@example.org", message)
        server.received_for("ana@example.org")

What it can be told to do (the fields of :class:`Behaviour`, given as keywords to :func:`smtp_server`; all but
``tls``, ``auth`` and ``discard`` can be changed on ``server.behaviour`` while it runs):

* ``reply_at``: script the reply at a stage of the conversation, by stage name: ``"EHLO"`` (EHLO and HELO),
  ``"MAIL"`` (MAIL FROM), ``"RCPT"`` (RCPT TO), ``"DATA"`` (the DATA command, before the message) or
  ``"MESSAGE"`` (after the final dot). A string is the reply to every attempt
  (``{"MAIL": "550 5.7.1 Sender address rejected"}``); a mapping gives one per address (the sender at MAIL, the
  recipient after it; ``"*"`` for any other), ``{"RCPT": {"bo@example.org": "550 5.1.1 No such user"}}``.
  Scripted replies come first and are recorded in ``refusals`` with the stage's name;
* ``defer``: answer 451 to the first N attempts, counted over all recipients (an int) or per recipient
  (a mapping address -> N); at RCPT TO, or after the message with ``defer_at="data"``;
* ``reject``: answer 550 for these recipients, at RCPT TO or after the message (``reject_at="data"``);
  ``reject_senders``: 550 to MAIL FROM for these senders;
* ``drop``: close the connection after the final dot, before the reply, for the first N messages (an int)
  or for every message to these recipients; dropped messages are kept in ``server.dropped``, not ``messages``;
* ``data_delay``: wait this many seconds before the reply to a message (the message is recorded before the
  wait, as a slow server would already have it); a client that gives up first closes the connection;
  ``delay_for``: only for messages to these recipients (empty: every message);
* ``auth=(user, password)``: require AUTH (PLAIN or LOGIN) before MAIL FROM (530 otherwise); other credentials
  get aiosmtpd's ``535 5.7.8 Authentication credentials invalid``;
* ``tls="starttls"`` (STARTTLS offered and required) or ``"tls"`` (implicit TLS), with a self-signed
  certificate for 127.0.0.1 and localhost made at start; ``server.client_context`` trusts it;
* ``discard=True``: accept and count (``server.accepted``) without keeping the bytes (for benchmarks).

What it tells: ``messages`` (:class:`Received`: envelope, bytes, connection number, AUTH and TLS flags),
``received_for(address)``, ``dropped``, ``refusals``, ``accepted``, ``copies`` (accepted messages per recipient,
counted in discard mode too), ``connections`` (sessions that said
EHLO/HELO), ``wait_for(n)``; ``settings(**overrides)`` gives SmtpSettings that reach it, ``client_context`` an
SSL context that trusts its certificate, ``disconnect_all()`` drops every open connection (as a relay drops
idle ones) and ``reset()`` forgets the records. Every record is kept under a lock, so client threads can
send at once and read it while the server runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from pydantic import SecretStr

from syndication.config import SmtpSettings

HOST = "127.0.0.1"
Stage = Literal["rcpt", "data"]
# The stages ``reply_at`` can script.
SCRIPTED_STAGES = ("EHLO", "MAIL", "RCPT", "DATA", "MESSAGE")


@dataclass
class Behaviour:
    """What the server does; see the module's description."""

    reply_at: Mapping[str, str | Mapping[str, str]] = field(default_factory=dict)
    defer: int | Mapping[str, int] = 0
    defer_at: Stage = "rcpt"
    defer_reply: str = "451 4.3.0 Try again later"
    reject: Collection[str] = ()
    reject_at: Stage = "rcpt"
    reject_reply: str = "550 5.1.1 No such user here"
    reject_senders: Collection[str] = ()
    drop: int | Collection[str] = 0
    data_delay: float = 0.0
    delay_for: Collection[str] = ()
    auth: tuple[str, str] | None = None
    tls: Literal["none", "starttls", "tls"] = "none"
    discard: bool = False


@dataclass(frozen=True)
class Received:
    """One message as the server took it: envelope, bytes, and over which connection (1, 2, ...)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    connection: int
    authenticated: bool = False
    tls: bool = False

    def parsed(self) -> EmailMessage:
        """The message parsed with the standard library's modern policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class Refusal:
    """A refusal the server gave: at which command, for which address, with which reply code."""

    stage: str
    address: str
    code: int


@dataclass
class _Record:
    messages: list[Received] = field(default_factory=list)
    dropped: list[Received] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    accepted: int = 0
    connections: int = 0
    deferred: Counter[str] = field(default_factory=Counter)
    deferred_total: int = 0
    dropped_total: int = 0
    copies: Counter[str] = field(default_factory=Counter)


class SmtpTestServer:
    """The server; start it with :func:`smtp_server` (or :meth:`start` and :meth:`close`)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.host = HOST
        self._record = _Record()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._live: set[_Session] = set()
        self.certificate_pem: bytes | None = None
        self.client_context: ssl.SSLContext | None = None
        server_context: ssl.SSLContext | None = None
        if behaviour.tls != "none":
            server_context, self.client_context, self.certificate_pem = _tls_contexts()
        self._controller = _Controller(
            self,
            _Handler(self),
            hostname=HOST,
            port=0,
            server_hostname="smtp.test.localhost",
            ssl_context=server_context if behaviour.tls == "tls" else None,
            tls_context=server_context if behaviour.tls == "starttls" else None,
            require_starttls=behaviour.tls == "starttls",
            # aiosmtpd counts only STARTTLS as TLS for AUTH: over implicit TLS and plain, AUTH is allowed as is.
            auth_require_tls=behaviour.tls == "starttls",
            authenticator=self._authenticate if behaviour.auth else None,
            timeout=30,
        )

    # Reading what happened -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (a free one, chosen at start)."""
        return int(self._controller.port)

    @property
    def messages(self) -> list[Received]:
        """Every message accepted with 250, in order (empty in discard mode)."""
        with self._lock:
            return list(self._record.messages)

    @property
    def dropped(self) -> list[Received]:
        """Messages whose connection was dropped after the final dot, by ``drop``."""
        with self._lock:
            return list(self._record.dropped)

    @property
    def refusals(self) -> list[Refusal]:
        """Every 4xx/5xx the script made the server give, in order."""
        with self._lock:
            return list(self._record.refusals)

    @property
    def accepted(self) -> int:
        """How many messages were accepted (counted in discard mode too)."""
        with self._lock:
            return self._record.accepted

    @property
    def copies(self) -> Counter[str]:
        """How many accepted messages each recipient has (counted in discard mode too)."""
        with self._lock:
            return Counter(self._record.copies)

    @property
    def connections(self) -> int:
        """How many SMTP sessions were opened (connections that said EHLO or HELO)."""
        with self._lock:
            return self._record.connections

    def received_for(self, address: str) -> list[Received]:
        """The accepted messages with ``address`` among their recipients."""
        with self._lock:
            return [m for m in self._record.messages if address in m.recipients]

    def wait_for(self, accepted: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``accepted`` messages were accepted; whether that happened in time."""
        with self._changed:
            return self._changed.wait_for(lambda: self._record.accepted >= accepted, timeout)

    def reset(self) -> None:
        """Forget every record and counter (the behaviour stays)."""
        with self._lock:
            self._record = _Record()

    def settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings that reach this server (security and credentials as it was started with)."""
        values: dict[str, Any] = {"host": self.host, "port": self.port, "security": self.behaviour.tls}
        values["timeout_seconds"] = 5.0
        if self.behaviour.auth:
            values["username"], password = self.behaviour.auth
            values["password"] = SecretStr(password)
        values.update(overrides)
        return SmtpSettings(**values)

    # Running -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and serve in a background thread."""
        self._controller.start()
        # The controller's own check connection (it reads the greeting and leaves) is no session.
        self.reset()

    def close(self, grace: float = 1.0) -> None:
        """Let open connections end (closing those still open after ``grace`` seconds), then stop."""
        deadline = time.monotonic() + grace
        while self._live_sessions() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.disconnect_all()
        self._controller.stop()

    def disconnect_all(self, timeout: float = 2.0) -> None:
        """Drop every open connection from the server's side (as a relay drops idle ones), and wait for it."""
        for session in self._live_sessions():
            self._controller.loop.call_soon_threadsafe(session.abort)
        deadline = time.monotonic() + timeout
        while self._live_sessions() and time.monotonic() < deadline:
            time.sleep(0.005)

    def _live_sessions(self) -> list[_Session]:
        with self._lock:
            return list(self._live)

    # Called from the server's thread -----------------------------------------------------------------------

    def _opened(self, session: _Session) -> None:
        with self._lock:
            self._live.add(session)

    def _closed(self, session: _Session) -> None:
        with self._lock:
            self._live.discard(session)

    def _greeted(self, session: _Session) -> None:
        with self._lock:
            if not session.number:
                self._record.connections += 1
                session.number = self._record.connections

    def _refuse(self, stage: str, address: str, reply: str) -> str:
        with self._lock:
            self._record.refusals.append(Refusal(stage, address, int(reply[:3])))
        return reply

    def _scripted(self, stage: str, address: str) -> str | None:
        """The reply ``reply_at`` scripts at ``stage`` for ``address`` (recorded as a refusal), or None."""
        assert stage in SCRIPTED_STAGES, stage
        script = self.behaviour.reply_at.get(stage)
        if script is None:
            return None
        reply = script if isinstance(script, str) else script.get(address, script.get("*"))
        return None if reply is None else self._refuse(stage, address, reply)

    def _defers(self, addresses: Collection[str]) -> bool:
        """Whether this attempt for ``addresses`` is answered 451 (and count it)."""
        defer = self.behaviour.defer
        with self._lock:
            if isinstance(defer, int):
                if self._record.deferred_total < defer:
                    self._record.deferred_total += 1
                    return True
                return False
            for address in addresses:
                if self._record.deferred[address] < defer.get(address, 0):
                    self._record.deferred[address] += 1
                    return True
            return False

    def _drops(self, addresses: Collection[str]) -> bool:
        drop = self.behaviour.drop
        with self._lock:
            if isinstance(drop, int):
                if self._record.dropped_total < drop:
                    self._record.dropped_total += 1
                    return True
                return False
            chosen = {drop} if isinstance(drop, str) else set(drop)
            return any(address in chosen for address in addresses)

    def _keep(self, received: Received, *, dropped: bool = False) -> None:
        with self._changed:
            if dropped:
                self._record.dropped.append(received)
                return
            self._record.accepted += 1
            self._record.copies.update(received.recipients)
            if not self.behaviour.discard:
                self._record.messages.append(received)
            self._changed.notify_all()

    def _authenticate(
        self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        expected = self.behaviour.auth
        if (
            expected is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == (expected[0].encode(), expected[1].encode())
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _Session(SMTP):
    """aiosmtpd's protocol, one per connection, telling the test server when it opens and closes."""

    def __init__(self, test_server: SmtpTestServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.test_server = test_server
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.test_server._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.test_server._closed(self)

    async def smtp_EHLO(self, hostname: str) -> None:
        scripted = self.test_server._scripted("EHLO", "")
        if scripted is not None:
            await self.push(scripted)
            return
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        scripted = self.test_server._scripted("EHLO", "")
        if scripted is not None:
            await self.push(scripted)
            return
        await super().smtp_HELO(hostname)

    async def smtp_DATA(self, arg: str) -> None:
        recipients = self.envelope.rcpt_tos if self.envelope is not None else []
        if recipients and not arg:
            scripted = self.test_server._scripted("DATA", recipients[0])
            if scripted is not None:
                await self.push(scripted)
                return
        await super().smtp_DATA(arg)

    def abort(self) -> None:
        if self.transport is not None:
            abort = getattr(self.transport, "abort", None)
            if abort is not None:
                abort()
            else:
                self.transport.close()

    @property
    def secure(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None


class _Controller(Controller):
    """aiosmtpd's threaded controller, on a port the system chooses, making our sessions."""

    def __init__(self, test_server: SmtpTestServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.test_server = test_server

    def factory(self) -> SMTP:
        return _Session(self.test_server, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self._listen()

    async def _listen(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server


class _Handler:
    """aiosmtpd hooks playing the behaviour."""

    def __init__(self, test_server: SmtpTestServer) -> None:
        self.test_server = test_server

    async def handle_HELO(self, server: _Session, session: SmtpSession, envelope: SmtpEnvelope, hostname: str) -> str:
        session.host_name = hostname
        self.test_server._greeted(server)
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: _Session, session: SmtpSession, envelope: SmtpEnvelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.test_server._greeted(server)
        return responses

    async def handle_MAIL(
        self, server: _Session, session: SmtpSession, envelope: SmtpEnvelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.test_server.behaviour
        if behaviour.auth and not session.authenticated:
            return self.test_server._refuse("MAIL", address, "530 5.7.0 Authentication required")
        scripted = self.test_server._scripted("MAIL", address)
        if scripted is not None:
            return scripted
        if address in behaviour.reject_senders:
            return self.test_server._refuse("MAIL", address, "550 5.7.1 Sender refused")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: _Session, session: SmtpSession, envelope: SmtpEnvelope, address: str, options: list[str]
    ) -> str:
        behaviour = self.test_server.behaviour
        scripted = self.test_server._scripted("RCPT", address)
        if scripted is not None:
            return scripted
        if behaviour.reject_at == "rcpt" and address in behaviour.reject:
            return self.test_server._refuse("RCPT", address, behaviour.reject_reply)
        if behaviour.defer_at == "rcpt" and self.test_server._defers([address]):
            return self.test_server._refuse("RCPT", address, behaviour.defer_reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: _Session, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        test_server = self.test_server
        behaviour = test_server.behaviour
        recipients = tuple(envelope.rcpt_tos)
        first = recipients[0] if recipients else ""
        scripted = test_server._scripted("MESSAGE", first)
        if scripted is not None:
            return scripted
        if behaviour.reject_at == "data" and any(r in behaviour.reject for r in recipients):
            return test_server._refuse("DATA", first, behaviour.reject_reply)
        if behaviour.defer_at == "data" and test_server._defers(recipients):
            return test_server._refuse("DATA", first, behaviour.defer_reply)
        content = envelope.original_content or b""
        received = Received(
            mail_from=envelope.mail_from or "",
            recipients=recipients,
            data=b"" if behaviour.discard else bytes(content),
            connection=server.number,
            authenticated=bool(session.authenticated),
            tls=server.secure,
        )
        if test_server._drops(recipients):
            test_server._keep(received, dropped=True)
            assert server.transport is not None
            server.transport.close()
            # Closing cancels this session's task (here) as soon as the connection is gone: no reply is sent.
            await asyncio.Event().wait()
        test_server._keep(received)
        slow = not behaviour.delay_for or any(r in behaviour.delay_for for r in recipients)
        if behaviour.data_delay and slow:
            await asyncio.sleep(behaviour.data_delay)
        return "250 2.0.0 OK: queued"


@contextmanager
def smtp_server(**behaviour: Any) -> Iterator[SmtpTestServer]:
    """A started SmtpTestServer with ``Behaviour(**behaviour)``, stopped on the way out."""
    server = SmtpTestServer(Behaviour(**behaviour))
    server.start()
    try:
        yield server
    finally:
        server.close()


@cache
def self_signed_certificate() -> tuple[bytes, bytes]:
    """A certificate (PEM) for 127.0.0.1 and localhost, valid for a day, and its private key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))],
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate_pem, key_pem


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    """The server's context (certificate and key from temporary files), a client's that trusts it, the PEM."""
    certificate_pem, key_pem = self_signed_certificate()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="smtp-test-tls-") as folder:
        certificate_file = Path(folder) / "cert.pem"
        key_file = Path(folder) / "key.pem"
        certificate_file.write_bytes(certificate_pem)
        key_file.write_bytes(key_pem)
        server_context.load_cert_chain(certificate_file, key_file)
    client_context = ssl.create_default_context(cadata=certificate_pem.decode("ascii"))
    return server_context, client_context, certificate_pem
