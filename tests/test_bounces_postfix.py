"""Bounces through a real Postfix: the relay accepts every digest, its next hop refuses some recipients later,
and Postfix's own DSNs come back to each delivery's VERP address through ``bounces receive``'s LMTP listener.

The service sends to a private Postfix (tests/postfix_server.py) as its relay, as it would to an organisation's
mail server; nothing is refused while the service talks to it. Postfix relays to the test's next hop, which
refuses two of the four recipients with ``550 5.1.1``; Postfix writes an RFC 3464 DSN to the envelope sender, a
``bounces+<token>@news.example.org`` address, and delivers it (``transport_maps``) over LMTP to the service's
bounce receiver. Those two subscribers reach the threshold and are suppressed; the other two stay active.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from syndication.app.bounces import edition_bounces, start_receiver
from syndication.app.editions import deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.app.subscribers import add_subscriber, find_subscriber
from syndication.clock import fixed_clock
from syndication.config import load_settings
from tests.postfix_server import free_port, postfix_relay, requires_postfix
from tests.smtp_server import smtp_server
from tests.support import NOW, post_record, write_config, write_jsonl

pytestmark = [pytest.mark.slow, requires_postfix]

KEY = "postfix-test-signing-key-0123456789"
BOUNCE_DOMAIN = "news.example.org"
REFUSED = ("bob@example.org", "cy@example.org")
ACCEPTED = ("ana@example.org", "dan@example.org")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s; Postfix's log:\n{logs()}")
        time.sleep(0.1)


def test_dsns_from_a_real_postfix_suppress_the_refused_and_no_one_else(tmp_path: Path, database_url: str) -> None:
    receiver_port = free_port()
    config = write_config(
        tmp_path,
        database_url,
        f'[mail]\nfrom_address = "news@news.example.org"\n[bounces]\naddress = "bounces@{BOUNCE_DOMAIN}"\n',
    )
    init_store(load_settings(config, environ={}))
    with (
        smtp_server(reject=list(REFUSED), reject_reply="550 5.1.1 <address>: User unknown") as next_hop,
        postfix_relay(
            tmp_path / "postfix",
            next_hop_port=next_hop.port,
            bounce_domain=BOUNCE_DOMAIN,
            bounce_lmtp_port=receiver_port,
        ) as relay,
    ):
        settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})
        settings = settings.model_copy(update={"smtp": relay.smtp_settings(), "secret_key": SecretStr(KEY)})
        with Service.open(settings, fixed_clock(NOW)) as service:
            posts = [post_record(10, title="Sponge streets", themes=["resilience"])]
            assert import_file(service, write_jsonl(tmp_path / "posts.jsonl", posts)).ok
            for address in (*ACCEPTED, *REFUSED):
                add_subscriber(service, address, confirmed=True, cadence="weekly")
            receiver = start_receiver(service, host="127.0.0.1", port=receiver_port)
            try:
                plan = plan_edition(service, "weekly", NOW - timedelta(days=30), NOW)
                assert plan.edition is not None and plan.queued == 4
                report = deliver(service, edition_id=plan.edition.id)
                # Postfix took every message: while sending, nobody bounced.
                assert (report.sent, report.bounced, report.failed) == (4, 0, 0)
                relay.wait_until_queue_empty(timeout=30)
                wait_for(
                    lambda: len(edition_bounces(service, plan.edition.id if plan.edition else 0)) == len(REFUSED),
                    20,
                    "both DSNs counted",
                    relay.logs,
                )
            finally:
                receiver.stop()
            assert sorted(m.recipients[0] for m in next_hop.messages) == sorted(ACCEPTED)
            for address in REFUSED:
                subscriber = find_subscriber(service, address)
                assert subscriber is not None and subscriber.status == "bounced", address
            for address in ACCEPTED:
                subscriber = find_subscriber(service, address)
                assert subscriber is not None and subscriber.status == "active", address
            bounces = edition_bounces(service, plan.edition.id)
            assert {(b.source, b.fault, b.status) for b in bounces} == {("dsn", "address", "5.1.1")}
            assert all("User unknown" in b.diagnostic for b in bounces)
