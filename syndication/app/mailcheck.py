"""What a sender's settings need before mail leaves: the problems of the From, DKIM and bounce settings, and the
SPF, DKIM and DMARC records the operator must publish in DNS for them (written out; nothing is looked up).

``sender_problems`` lists each problem with its level: "refuse" (the configuration cannot work; ``config.py``
already refuses these as the file loads) or "warn" (mail leaves, but mailbox providers will distrust it: a From
domain that cannot receive mail, a DKIM domain DMARC will not count). ``sender_warnings`` is the warnings alone,
as ``syndication run`` logs them when it starts and ``syndication check-mail`` prints them.
``dns_records`` is what ``check-mail`` prints: two DKIM records when ``[dkim]`` has an Ed25519 key beside the RSA
one (RFC 8463), one per selector.

``language_warnings`` is what ``syndication check-config`` prints: where readers of a language of ``[digest]
languages`` would be shown words of another (no shipped catalog; a theme or region without a name in it).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization

from syndication.config import Settings, untranslated_names
from syndication.errors import ConfigError

Level = Literal["refuse", "warn"]

# Domains that never receive mail from the internet (RFC 2606 and 6761): a From there cannot be replied to and
# fails every receiver's checks. The demo and the tests use them, hence a warning rather than a refusal.
_RESERVED_SUFFIXES = ("localhost", "local", "invalid", "test", "example", "example.com", "example.net", "example.org")


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of the sending settings: ``refuse`` (cannot work) or ``warn`` (mail will be distrusted)."""

    level: Level
    message: str


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """A TXT record to publish: where (``name``), what (``value``; None when it cannot be written out) and why."""

    name: str
    value: str | None
    explanation: str


@dataclass(frozen=True, slots=True)
class MailDnsReport:
    """What ``check-mail`` prints: the domains in play, the three records (four with an Ed25519 DKIM key) and the
    warnings."""

    from_domain: str
    envelope_domain: str
    spf: DnsRecord
    dkim: DnsRecord | None
    dkim_ed25519: DnsRecord | None
    dmarc: DnsRecord
    warnings: tuple[str, ...]


def domain_of(address: str) -> str:
    """The domain of an email address, lower-cased."""
    return address.rpartition("@")[2].strip().strip(".").lower()


def is_reserved_domain(domain: str) -> bool:
    """Whether ``domain`` is one that cannot receive mail (localhost, .local, .invalid, .test, example.*)."""
    domain = domain.lower().strip(".")
    return any(domain == suffix or domain.endswith("." + suffix) for suffix in _RESERVED_SUFFIXES)


def organisational_domain(domain: str) -> str:
    """The organisational domain DMARC aligns on: tldextract's registered domain when it is installed, else the
    last two labels (an approximation: wrong for suffixes such as co.uk, where it asks for more alignment)."""
    domain = domain.lower().strip(".")
    try:
        import tldextract  # type: ignore[import-not-found]  # optional: not a dependency
    except ImportError:
        return ".".join(domain.split(".")[-2:])
    extracted = tldextract.TLDExtract(suffix_list_urls=())(domain)  # the bundled list: nothing is fetched
    registered: str = extracted.registered_domain
    return registered or domain


def aligned(one: str, other: str) -> bool:
    """Relaxed DMARC alignment: the two domains share their organisational domain."""
    return organisational_domain(one) == organisational_domain(other)


def sender_problems(settings: Settings) -> list[Problem]:
    """The problems of the sending settings, refusals first."""
    problems: list[Problem] = []
    bounces = settings.bounces
    if bounces.address is None and (bounces.listen is not None or bounces.mailbox is not None):
        configured = "[bounces] listen" if bounces.listen is not None else "[bounces.mailbox]"
        problems.append(Problem("refuse", f"{configured} is set but [bounces] address is not: no bounce comes back"))
    from_domain = domain_of(settings.mail.from_address)
    if is_reserved_domain(from_domain):
        problems.append(
            Problem(
                "warn",
                f"[mail] from_address {settings.mail.from_address!r} is on {from_domain!r}, a domain that cannot"
                " receive mail: replies and bounces are lost and receivers treat the mail as spam; use an address"
                " of a domain you own",
            )
        )
    dkim_domain = settings.dkim.domain.lower().strip(".")
    if dkim_domain and not aligned(dkim_domain, from_domain):
        problems.append(
            Problem(
                "warn",
                f"[dkim] domain {dkim_domain!r} is not aligned with the From domain {from_domain!r}: DMARC ignores"
                f" the signature and fails unless SPF aligns; sign with {from_domain!r} (or a domain under"
                f" {organisational_domain(from_domain)!r})",
            )
        )
    return sorted(problems, key=lambda problem: problem.level != "refuse")


def sender_warnings(settings: Settings) -> list[str]:
    """The warnings of ``sender_problems`` (the refusals are refused as the configuration loads)."""
    return [problem.message for problem in sender_problems(settings) if problem.level == "warn"]


def language_warnings(settings: Settings) -> list[str]:
    """Where readers of a language of ``[digest] languages`` are shown words of another: each language without a
    shipped catalog (its emails are worded in English, its dates and numbers in it), then each theme and region
    without a name in one (``config.untranslated_names``: shown in the site's language there)."""
    from syndication.mailing.render import catalog_language  # the templates' machinery: only when asked

    warnings = [
        f"digest language {language!r} has no shipped catalog: its emails are worded in English (dates and numbers"
        f" in {language})"
        for language in settings.digest.languages
        if catalog_language(language) is None
    ]
    return warnings + untranslated_names(settings)


def dns_records(settings: Settings) -> MailDnsReport:
    """The SPF, DKIM and DMARC records this configuration needs published, and its warnings."""
    from_domain = domain_of(settings.mail.from_address)
    envelope_domain = domain_of(settings.bounces.address or settings.mail.from_address)
    warnings = sender_warnings(settings)
    spf = DnsRecord(
        envelope_domain,
        "v=spf1 ip4:<RELAY-IPv4> -all",
        "The envelope sender (Return-Path: [bounces] address, else the From address) is on this domain; SPF is"
        " checked there. Replace ip4:<RELAY-IPv4> by the address(es) your relay ([smtp] host) sends from (ip4:,"
        " ip6:), or by the include: your mail provider documents. Publish one SPF record per name: merge this with"
        " any record already there. '-all' refuses mail from anywhere else.",
    )
    dkim: DnsRecord | None = None
    dkim_ed25519: DnsRecord | None = None
    if settings.dkim.domain:
        domain = settings.dkim.domain.lower().strip(".")
        value, problem = _dkim_value(settings)
        if problem is not None:
            warnings.append(problem)
        dkim = DnsRecord(
            f"{settings.dkim.selector or '<SELECTOR>'}._domainkey.{domain}",
            value,
            "The public half of [dkim] key_file, which receivers verify the DKIM-Signature with. A DNS TXT string"
            " holds at most 255 characters: most DNS panels split a longer value themselves; in a zone file write"
            " it as several quoted strings one after the other.",
        )
        if settings.dkim.ed25519_selector:
            value, problem = _dkim_ed25519_value(settings)
            if problem is not None:
                warnings.append(problem)
            dkim_ed25519 = DnsRecord(
                f"{settings.dkim.ed25519_selector}._domainkey.{domain}",
                value,
                "The public half of [dkim] ed25519_key_file, for the second DKIM-Signature (ed25519-sha256, RFC"
                " 8463). Receivers that do not know Ed25519 ignore that signature and verify the RSA one, so publish"
                " both records.",
            )
    else:
        warnings.append(
            "[dkim] domain is not set: nothing is signed, so DMARC passes only where SPF aligns (forwarded mail"
            " fails); set [dkim] selector, domain and key_file"
        )
    dmarc = DnsRecord(
        f"_dmarc.{from_domain}",
        f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{organisational_domain(from_domain)}",
        "Receivers check the From domain's policy here. Start with p=none and read the aggregate reports sent to"
        " rua= (an address you read; change it as you like); once they show your mail passing, raise the policy to"
        " p=quarantine, then p=reject. One DMARC record per domain: keep the one already published if there is.",
    )
    return MailDnsReport(from_domain, envelope_domain, spf, dkim, dkim_ed25519, dmarc, tuple(warnings))


def _dkim_value(settings: Settings) -> tuple[str | None, str | None]:
    """The DKIM key record's value from the configured private key, or None and why it cannot be written."""
    from syndication.mailing.dkim import load_key

    if settings.dkim.key_file is None:
        return None, "[dkim] key_file is not set: no public key to publish (and nothing can be signed)"
    try:
        key = load_key(settings.dkim.key_file)
    except ConfigError as error:
        return None, str(error)
    private = key.private
    if private is None:  # a key only dkimpy reads (OpenSSL refused it): its public half cannot be written here
        return None, f"dkim.key_file {settings.dkim.key_file}: OpenSSL cannot read the key to derive its public half"
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}", None


def _dkim_ed25519_value(settings: Settings) -> tuple[str | None, str | None]:
    """The Ed25519 DKIM key record's value (RFC 8463 §4: p= is the base64 of the raw 32-byte public key, not DER),
    or None and why it cannot be written."""
    from syndication.mailing.dkim import load_ed25519_key

    if settings.dkim.ed25519_key_file is None:
        return None, "[dkim] ed25519_key_file is not set: no Ed25519 public key to publish"
    try:
        key = load_ed25519_key(settings.dkim.ed25519_key_file)
    except ConfigError as error:
        return None, str(error)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}", None
