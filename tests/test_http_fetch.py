"""The sources' HTTP client against a real local server: schemes, addresses, redirects, sizes, validators."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from syndication.errors import SourceError
from syndication.sources.http import HttpStatusError, classify_address, fetch
from tests.recorded import RecordedServer, Reply, Seen, document, serving

# A public address the tests pretend some names resolve to; connections to it are sent to the local server.
PUBLIC = "93.184.216.34"
ALLOW_IT = "(set allow_private_networks = true to allow it)"


@pytest.fixture
def server() -> Iterator[RecordedServer]:
    with serving() as running:
        yield running


@dataclass
class FakeDns:
    """Names that resolve to chosen addresses (one answer per lookup, the last repeated)."""

    answers: dict[str, list[str]]
    lookups: list[str] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """Lets a name look public while the connection still reaches 127.0.0.1: the socket layer is faked,
    not the client, so the client's own checks run as they would."""
    fake = FakeDns({"feeds.example.test": [PUBLIC]})
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in fake.answers:
            fake.lookups.append(host)
            queue = fake.answers[host]
            address = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        fake.connected.append(address[0])
        target = ("127.0.0.1", address[1]) if address[0] == PUBLIC else address
        return real_connect(target, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return fake


def get(url: str, *, allow: bool = True, max_bytes: int = 100_000, timeout: float = 5, **kwargs: Any) -> Any:
    return fetch(url, timeout=timeout, max_bytes=max_bytes, allow_private_networks=allow, **kwargs)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address (IPv4-mapped 127.0.0.1)"),
        ("::ffff:10.1.2.3", "a private address (IPv4-mapped 10.1.2.3)"),
        ("2002:7f00:1::", "a loopback address (6to4 127.0.0.1)"),
        ("64:ff9b::a9fe:a9fe", "a link-local address (cloud metadata service) (NAT64 169.254.169.254)"),
        ("169.254.169.254", "a link-local address (cloud metadata service)"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("fd00:ec2::254", "a private address (cloud metadata service)"),
        ("100.64.0.1", "not a public address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_addresses_are_classified(address: str, reason: str | None) -> None:
    assert classify_address(address) == reason


def test_a_loopback_url_is_refused_before_any_request(server: RecordedServer) -> None:
    server.route("/feed.xml", Reply(200, b"<rss/>"))
    url = server.url("/feed.xml")
    with pytest.raises(SourceError) as caught:
        get(url, allow=False)
    assert str(caught.value) == f"{url}: refused: 127.0.0.1 is a loopback address {ALLOW_IT}"
    assert server.requests == []


def test_a_name_resolving_to_loopback_is_refused(server: RecordedServer) -> None:
    url = f"http://localhost:{server.port}/feed.xml"
    with pytest.raises(SourceError) as caught:
        get(url, allow=False)
    assert str(caught.value).startswith(f"{url}: refused: localhost resolves to ")
    assert "a loopback address" in str(caught.value)
    assert server.requests == []


def test_private_networks_can_be_allowed(server: RecordedServer) -> None:
    server.route("/feed.xml", Reply(200, b"<rss/>", {"Content-Type": "application/rss+xml"}))
    result = get(server.url("/feed.xml"), allow=True, accept="application/rss+xml")
    assert (result.status, result.body, result.content_type) == (200, b"<rss/>", "application/rss+xml")
    assert result.url == server.url("/feed.xml")
    request = server.seen("/feed.xml")[0]
    assert request.headers["user-agent"].startswith("syndication/")
    assert request.headers["accept"] == "application/rss+xml"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://files.example.org/feed.xml", "gopher://x.example/"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(SourceError) as caught:
        get(url)
    assert str(caught.value) == f"{url}: refused: only http and https URLs are fetched"


def test_a_public_name_is_fetched_and_its_redirect_to_loopback_refused(server: RecordedServer, dns: FakeDns) -> None:
    local = server.url("/internal")
    server.route("/feed.xml", Reply(200, b"public feed"))
    server.route("/moved", Reply(302, b"", {"Location": local}))
    start = f"http://feeds.example.test:{server.port}"
    assert get(f"{start}/feed.xml", allow=False).body == b"public feed"
    with pytest.raises(SourceError) as caught:
        get(f"{start}/moved", allow=False)
    assert str(caught.value) == (
        f"{start}/moved: redirected to {local}: refused: 127.0.0.1 is a loopback address {ALLOW_IT}"
    )
    assert server.seen("/internal") == []


def test_the_connection_goes_to_the_address_that_was_checked(server: RecordedServer, dns: FakeDns) -> None:
    # A rebinding name: public for the check, loopback for whoever asks again.
    dns.answers["rebind.example.test"] = [PUBLIC, "127.0.0.1"]
    server.route("/feed.xml", Reply(200, b"ok"))
    assert get(f"http://rebind.example.test:{server.port}/feed.xml", allow=False).body == b"ok"
    assert dns.lookups == ["rebind.example.test"]
    assert dns.connected == [PUBLIC]


def test_redirects_are_followed_and_relative_locations_resolved(server: RecordedServer) -> None:
    server.route("/old", Reply(301, b"", {"Location": "/newer"}))
    server.route("/newer", Reply(307, b"", {"Location": server.url("/newest")}))
    server.route("/newest", Reply(200, b"here"))
    result = get(server.url("/old"))
    assert (result.url, result.body) == (server.url("/newest"), b"here")


def test_more_than_five_redirects_are_refused(server: RecordedServer) -> None:
    server.route("/loop", Reply(302, b"", {"Location": "/loop"}))
    with pytest.raises(SourceError, match=r"refused: more than 5 redirects"):
        get(server.url("/loop"))
    assert len(server.seen("/loop")) == 6


def test_a_redirect_to_another_scheme_is_refused(server: RecordedServer) -> None:
    server.route("/sneaky", Reply(302, b"", {"Location": "file:///etc/passwd"}))
    with pytest.raises(SourceError) as caught:
        get(server.url("/sneaky"))
    assert str(caught.value) == (
        f"{server.url('/sneaky')}: redirected to file:///etc/passwd: refused: only http and https URLs are fetched"
    )


def test_conditional_get_sends_validators_and_reads_304(server: RecordedServer) -> None:
    server.route("/feed.xml", document(b"<rss/>", "application/rss+xml", etag='"v1"'))
    first = get(server.url("/feed.xml"))
    assert (first.etag, first.not_modified, first.body) == ('"v1"', False, b"<rss/>")
    second = get(server.url("/feed.xml"), etag=first.etag, last_modified="Wed, 01 May 2024 10:00:00 GMT")
    assert (second.status, second.not_modified, second.body) == (304, True, b"")
    sent = server.seen("/feed.xml")[1].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Wed, 01 May 2024 10:00:00 GMT"
    assert "if-none-match" not in server.seen("/feed.xml")[0].headers


@pytest.mark.parametrize("omit_length", [False, True], ids=["declared", "streamed"])
def test_a_body_over_max_bytes_is_refused(server: RecordedServer, omit_length: bool) -> None:
    server.route("/big", Reply(200, b"x" * 300_000, omit_length=omit_length))
    server.route("/fits", Reply(200, b"y" * 1000, omit_length=omit_length))
    with pytest.raises(SourceError, match=r"refused: the response is .*max_bytes = 1000"):
        get(server.url("/big"), max_bytes=1000)
    assert get(server.url("/fits"), max_bytes=1000).body == b"y" * 1000


def test_server_errors_name_the_url_and_status(server: RecordedServer) -> None:
    server.route("/broken", Reply(500, b'{"code": "oops"}'))
    with pytest.raises(HttpStatusError) as caught:
        get(server.url("/broken"))
    assert str(caught.value) == f"{server.url('/broken')}: HTTP 500 Internal Server Error"
    assert (caught.value.status, caught.value.body) == (500, b'{"code": "oops"}')
    with pytest.raises(SourceError, match=r"/missing: HTTP 404 Not Found$"):
        get(server.url("/missing"))


def test_a_slow_server_times_out(server: RecordedServer) -> None:
    def slow(_request: Seen) -> Reply:
        time.sleep(0.6)
        return Reply(200, b"late")

    server.route("/slow", slow)
    with pytest.raises(SourceError) as caught:
        get(server.url("/slow"), timeout=0.2)
    assert str(caught.value) == f"{server.url('/slow')}: timed out after 0.2 s"


def test_an_unreachable_port_is_a_source_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(SourceError, match=rf"^http://127.0.0.1:{port}/: cannot connect: "):
        get(f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("location", ["http://[not-ipv6/feed", "http://host:port/feed"])
def test_a_redirect_to_a_malformed_url_is_a_source_error(server: RecordedServer, location: str) -> None:
    server.route("/odd", Reply(302, b"", {"Location": location}))
    with pytest.raises(SourceError, match=rf"^{server.url('/odd')}: .*[Ii]nvalid"):
        get(server.url("/odd"))


def test_a_redirect_to_a_host_idna_cannot_encode_is_refused(server: RecordedServer) -> None:
    server.route("/idna", Reply(302, b"", {"Location": "http://xn--/feed"}))
    with pytest.raises(SourceError, match=r": refused: not a valid URL"):
        get(server.url("/idna"))


def test_a_body_encoded_twice_is_refused_before_it_is_decoded(server: RecordedServer) -> None:
    twice = gzip.compress(gzip.compress(b"\0" * 1_000_000))  # decoded layer by layer, a bomb grows unseen
    server.route("/bomb", Reply(200, twice, {"Content-Encoding": "gzip, gzip"}))
    with pytest.raises(SourceError, match=r"refused: the response is encoded 2 times \(gzip, gzip\)"):
        get(server.url("/bomb"))


def test_headers_trickled_a_line_at_a_time_are_given_up_at_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stop = threading.Event()

        def trickle() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.05):  # each line well within the read timeout, the whole never ending
                    try:
                        connection.sendall(b"X-Slow: yes\r\n")
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        began = time.monotonic()
        try:
            with pytest.raises(SourceError, match=r"timed out after 0.5 s"):
                get(f"http://127.0.0.1:{port}/feed", timeout=0.5)
        finally:
            stop.set()
        assert time.monotonic() - began < 5
