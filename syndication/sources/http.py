"""Fetching one URL for a source, safely: http(s) only, bounded in time and size, never into private networks.

This is the only module of the sources that speaks HTTP. Every address a host name resolves to is checked
when the connection is opened, and the connection goes to exactly the address that was checked, so a DNS
answer that changes between the check and the connection (DNS rebinding) cannot lead a fetch inside.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from ssl import SSLContext
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from syndication import __version__
from syndication.errors import SourceError

MAX_REDIRECTS = 5
USER_AGENT = f"syndication/{__version__} (newsletter and feed syndication)"
ACCEPT_ANY = "*/*"
# An error response is read only this far: enough for an API's error code, never a whole page.
_ERROR_BODY_BYTES = 65_536
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits; it is judged by that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Cloud metadata services answer on these: named in the refusal, since they are why the rule exists.
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


@dataclass(frozen=True)
class FetchResult:
    """What one fetch brought back. ``not_modified`` means a 304 answered the conditional GET (no body)."""

    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    etag: str | None
    last_modified: str | None
    not_modified: bool

    @property
    def content_type(self) -> str | None:
        """The Content-Type header as sent, if any."""
        return self.headers.get("content-type")


class HttpStatusError(SourceError):
    """The server answered with a 4xx or 5xx status; the start of its body is kept for APIs' error codes."""

    def __init__(self, message: str, status: int, body: bytes) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class _AddressRefused(Exception):
    """Raised inside the connection pool when a host resolves to an address that may not be fetched."""


def classify_address(address: str) -> str | None:
    """Why ``address`` is not a public internet address ("a loopback address", ...), or None if it is one.

    IPv4 addresses carried inside IPv6 (IPv4-mapped, 6to4, NAT64) are judged by the IPv4 address they carry.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _with_carrier(classify_address(str(ip.ipv4_mapped)), "IPv4-mapped", ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return _with_carrier(classify_address(str(ip.sixtofour)), "6to4", ip.sixtofour)
        if ip in _NAT64:
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return _with_carrier(classify_address(str(carried)), "NAT64", carried)
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address" + (" (cloud metadata service)" if ip in _METADATA else "")
    if ip.is_multicast:
        return "a multicast address"
    # Reserved before private: Python counts 240.0.0.0/4 as both, and "reserved" says more.
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address" + (" (cloud metadata service)" if ip in _METADATA else "")
    if not ip.is_global:  # shared address space (100.64.0.0/10) and the like
        return "not a public address"
    return None


def _with_carrier(reason: str | None, kind: str, carried: ipaddress.IPv4Address) -> str | None:
    return None if reason is None else f"{reason} ({kind} {carried})"


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the fetch's deadline: a server that trickles its headers a
    line at a time, each within the read timeout, is given up like one that trickles its body."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the whole fetch took longer than its timeout")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, self._left(timeout)), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves a host once, refuses it if any of its addresses is not public, and connects to those addresses;
    every connection ends by ``deadline``."""

    def __init__(self, allow_private_networks: bool, deadline: float) -> None:
        self.allow_private_networks = allow_private_networks
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        # getaddrinfo has no timeout of its own; the system resolver's limits apply to this one step.
        try:
            answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
        if not self.allow_private_networks:
            # One non-public address refuses the host: a name that mixes both is not to be trusted.
            for address in addresses:
                reason = classify_address(address)
                if reason is not None:
                    subject = f"{address} is" if address == host else f"{host} resolves to {address},"
                    raise _AddressRefused(f"{subject} {reason}")
        last_error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                # The checked address itself is connected to; TLS still names ``host`` (SNI, certificate).
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
                return _DeadlineStream(stream, self.deadline)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        raise last_error or httpcore.ConnectError(f"{host} has no address")


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport with a connection pool that opens connections only through ``_CheckedBackend``."""

    def __init__(self, allow_private_networks: bool, deadline: float) -> None:
        context = _tls_context()
        super().__init__(verify=context)
        # httpx offers no public way to choose the network backend: its pool (not yet connected) is replaced.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, network_backend=_CheckedBackend(allow_private_networks, deadline)
        )


@cache
def _tls_context() -> SSLContext:
    # Loading the CA bundle takes a while; one verifying context serves every fetch.
    return httpx.create_ssl_context()


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    allow_private_networks: bool,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = ACCEPT_ANY,
    user_agent: str = USER_AGENT,
) -> FetchResult:
    """GET ``url``, following up to five redirects, each checked like the first; raises SourceError.

    With ``etag`` or ``last_modified`` the request is conditional and a 304 gives ``not_modified``. A body
    larger than ``max_bytes`` is refused while it streams in. ``timeout`` bounds connecting and each read,
    and the whole fetch is given up once it has run for longer than that.
    """
    headers = {"User-Agent": user_agent, "Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    # trust_env off: a proxy from the environment would be connected to without the address check.
    with httpx.Client(
        transport=_CheckedTransport(allow_private_networks, deadline),
        headers=headers,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            where = url if current == url else f"{url}: redirected to {current}"
            _check_scheme(current, where)
            try:
                response = client.send(client.build_request("GET", current), stream=True)
            except (httpx.InvalidURL, UnicodeError) as error:  # UnicodeError: a host IDNA cannot encode
                raise SourceError(f"{where}: refused: not a valid URL ({error})") from None
            except _AddressRefused as refusal:
                raise SourceError(
                    f"{where}: refused: {refusal} (set allow_private_networks = true to allow it)"
                ) from None
            except httpx.HTTPError as error:
                raise _network_error(where, error, timeout) from error
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    current = _redirect_target(current, location, where)
                    continue
                return _result(response, current, where, max_bytes, deadline, timeout)
            except httpx.HTTPError as error:
                raise _network_error(where, error, timeout) from error
            finally:
                response.close()
    raise SourceError(f"{url}: refused: more than {MAX_REDIRECTS} redirects (last to {current})")


def _check_scheme(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:  # a bracketed host that is no IPv6 address, a port that is no number
        raise SourceError(f"{where}: refused: not a valid URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SourceError(f"{where}: refused: only http and https URLs are fetched")
    if not host:
        raise SourceError(f"{where}: refused: the URL has no host")


def _redirect_target(current: str, location: str, where: str) -> str:
    try:
        return urljoin(current, location.strip())
    except ValueError as error:
        raise SourceError(f"{where}: refused: redirect to an invalid URL {location[:200]!r} ({error})") from None


def _result(
    response: httpx.Response, url: str, where: str, max_bytes: int, deadline: float, timeout: float
) -> FetchResult:
    status = response.status_code
    headers = {name.lower(): value for name, value in response.headers.items()}
    if status == 304:
        body = b""
    elif status >= 400:
        body = _read_body(response, min(max_bytes, _ERROR_BODY_BYTES), where, deadline, timeout, truncate=True)
        raise HttpStatusError(f"{where}: HTTP {status} {response.reason_phrase}".rstrip(), status, body)
    elif status >= 300 or status < 200:
        raise SourceError(f"{where}: unexpected HTTP {status} {response.reason_phrase}".rstrip())
    else:
        codings = [
            c.strip() for c in headers.get("content-encoding", "").split(",") if c.strip() not in ("", "identity")
        ]
        if len(codings) > 1:
            # Each layer is decoded whole before its size can be counted: two layers of gzip made 2 GB of 1.8 KB.
            raise SourceError(f"{where}: refused: the response is encoded {len(codings)} times ({', '.join(codings)})")
        body = _read_body(response, max_bytes, where, deadline, timeout, truncate=False)
    return FetchResult(
        url=url,
        status=status,
        body=body,
        headers=headers,
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        not_modified=status == 304,
    )


def _read_body(
    response: httpx.Response, limit: int, where: str, deadline: float, timeout: float, *, truncate: bool
) -> bytes:
    """At most ``limit`` decoded bytes: more is refused (or, with ``truncate``, cut off) without reading on."""
    declared = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    # A declared length says "too big" before a byte is read; compressed lengths say nothing of the decoded size.
    if not truncate and not encoded and declared.isdigit() and int(declared) > limit:
        raise SourceError(f"{where}: refused: the response is {int(declared)} bytes, over max_bytes = {limit}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            if truncate:
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            raise SourceError(f"{where}: refused: the response is larger than max_bytes = {limit}")
        chunks.append(chunk)
        # Each read has its own timeout; this bounds a server that trickles a byte at a time.
        if time.monotonic() > deadline:
            raise SourceError(f"{where}: timed out after {timeout:g} s")
    return b"".join(chunks)


def _network_error(where: str, error: httpx.HTTPError, timeout: float) -> SourceError:
    if isinstance(error, httpx.TimeoutException):
        return SourceError(f"{where}: timed out after {timeout:g} s")
    if isinstance(error, httpx.ConnectError):
        return SourceError(f"{where}: cannot connect: {error}")
    return SourceError(f"{where}: network error: {error or type(error).__name__}")


class RequestRefused(SourceError):
    """A request refused before it was sent: not http(s), no host, or an address it may not go to."""


class AddressRefused(RequestRefused):
    """A request refused for the address its host is or resolves to (loopback, private, link-local...)."""


@dataclass(frozen=True)
class PostResult:
    """What a POST brought back: the status code and the start of the body."""

    status: int
    body: bytes


def post(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    allow_private_networks: bool,
    user_agent: str = USER_AGENT,
) -> PostResult:
    """POST ``body`` to ``url`` with the same guard as ``fetch`` (http(s) only, every address checked after DNS
    and pinned, nothing into loopback, private, link-local or metadata addresses unless allowed) and its deadline;
    redirects are not followed (a 3xx is an answer like any other). Any status is returned; RequestRefused when
    the request may not go, SourceError when it could not be made or timed out."""
    try:
        _check_scheme(url, url)
    except SourceError as error:
        raise RequestRefused(str(error)) from None
    deadline = time.monotonic() + timeout
    with httpx.Client(
        transport=_CheckedTransport(allow_private_networks, deadline),
        headers={"User-Agent": user_agent, **headers},
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        try:
            response = client.send(client.build_request("POST", url, content=body), stream=True)
        except (httpx.InvalidURL, UnicodeError) as error:
            raise RequestRefused(f"{url}: refused: not a valid URL ({error})") from None
        except _AddressRefused as refusal:
            raise AddressRefused(f"{url}: refused: {refusal}") from None
        except httpx.HTTPError as error:
            raise _network_error(url, error, timeout) from error
        try:
            answer = _read_body(response, _ERROR_BODY_BYTES, url, deadline, timeout, truncate=True)
        except httpx.HTTPError as error:
            raise _network_error(url, error, timeout) from error
        finally:
            response.close()
        return PostResult(response.status_code, answer)
