"""Sign a ~30 KB personalised digest with DKIM (rsa-sha256, 2048-bit key; ed25519-sha256 beside it), and time it.

The message is a real one: 200 generated posts imported, a 30-post window composed, rendered and inlined for one
theme combination, personalised for one subscriber (signed links, List-* headers), the combination picked whose
message is nearest 30 KiB. In the same run, on one core, interleaved in rounds: our signer (``syndication.mailing
.dkim.signer``, what the Mailer calls per message), dkimpy's ``dkim.sign`` as the old signer called it (parse for
the header list, then sign; fewer messages, it is slow), and OpenSSL's bare RSA sign of a precomputed SHA-256
digest with the same key, the floor no signer can go under. Beside them, for the optional second signature (RFC
8463): our Ed25519 header alone (``signature_header`` with an Ed25519 key), our signer with both keys (what the
Mailer does per message when ``[dkim] ed25519_selector`` is set: one parse and body hash, two headers), and
OpenSSL's bare Ed25519 sign of a SHA-256 digest. Our headers, RSA and Ed25519, are checked byte-identical to
dkimpy's for the same second, and verified by dkimpy.

Goal (issue 17): at most 1.5 ms a message on one core; the issue measured the bare RSA sign at 0.25 ms, so the
ratio to the bare sign in the same run is judged against 6.0 as well. The signer with both keys is held to the
same 1.5 ms and 6.0: it is what a message costs with Ed25519 on.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from bench.generate import bench_themes_toml, write_posts
from bench.records import record
from bench.render_digests import POSTS, SINCE, UNTIL, WINDOW_POSTS, links_of, list_headers, theme_combinations
from syndication.app.digests import compose, personalised_message
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import DkimSettings, load_settings
from syndication.mailing.dkim import (
    OVERSIGNED_HEADERS,
    SIGNED_HEADERS,
    load_ed25519_key,
    load_key,
    signature_header,
    signer,
)
from syndication.mailing.render import PLACEHOLDERS, MailRenderer

GOAL_MS = 1.5
GOAL_RATIO = 6.0  # 1.5 ms over the 0.25 ms bare RSA sign
TARGET_BYTES = 30 * 1024
SELECTOR = "news2024"
ED25519_SELECTOR = "news2024e"
DOMAIN = "news.example.org"
ROUNDS = 10


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.sign_dkim", description=__doc__)
    parser.add_argument("--messages", type=int, default=2_000, help="signatures by our signer and by bare RSA")
    parser.add_argument("--dkimpy", type=int, default=200, help="signatures by dkimpy")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        message = digest_message(work)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        key_file = work / "dkim.pem"
        key_file.write_bytes(pem)
        ed_key = ed25519.Ed25519PrivateKey.generate()
        ed_key_file = work / "dkim-ed25519.pem"
        ed_key_file.write_bytes(
            ed_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        sign_message = signer(DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=key_file))
        sign_both = signer(
            DkimSettings(
                selector=SELECTOR,
                domain=DOMAIN,
                key_file=key_file,
                ed25519_selector=ED25519_SELECTOR,
                ed25519_key_file=ed_key_file,
            )
        )
        assert sign_message is not None and sign_both is not None
        check(message, key_file, key, pem)
        check_ed25519(message, sign_both, key_file, key, ed_key)
        loaded_ed_key = load_ed25519_key(ed_key_file)
    digest = hashlib.sha256(message).digest()
    prehashed = utils.Prehashed(hashes.SHA256())
    pkcs1 = padding.PKCS1v15()

    def bare() -> bytes:
        return key.sign(digest, pkcs1, prehashed)

    def bare_ed25519() -> bytes:
        return ed_key.sign(digest)  # RFC 8463 signs the 32-byte SHA-256 digest: this is that step alone

    def ours() -> bytes:
        return sign_message(message)

    def ours_ed25519() -> bytes:
        return signature_header(message, ED25519_SELECTOR.encode(), DOMAIN.encode(), loaded_ed_key) + message

    def ours_both() -> bytes:
        return sign_both(message)

    def theirs() -> bytes:
        return dkimpy_header(message, pem) + message

    calls = {"bare": bare, "ours": ours, "bare_ed25519": bare_ed25519, "ours_ed25519": ours_ed25519}
    calls["both"] = ours_both
    times: dict[str, list[float]] = {name: [] for name in (*calls, "dkimpy")}
    for _ in range(ROUNDS):  # interleaved, so that a noisy stretch of the shared machine hits them all
        for name, call in calls.items():
            times[name] += timed(call, args.messages // ROUNDS)
        times["dkimpy"] += timed(theirs, max(1, args.dkimpy // ROUNDS))
    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    ratio = median["ours"] / median["bare"]
    verdict = "PASS" if median["ours"] <= GOAL_MS else "FAIL"
    ratio_verdict = "PASS" if ratio <= GOAL_RATIO else "FAIL"
    both_verdict = "PASS" if median["both"] <= GOAL_MS else "FAIL"
    both_ratio = median["both"] / median["bare"]
    both_ratio_verdict = "PASS" if both_ratio <= GOAL_RATIO else "FAIL"
    lines = [
        f"- message: a personalised digest of a {WINDOW_POSTS}-post window, {len(message):,} bytes "
        f"({len(message) / 1024:.1f} KiB); key RSA 2048 bits; rsa-sha256, relaxed/relaxed, "
        f"{signature_tags(sign_message(message))} headers signed",
        f"- OpenSSL's bare RSA sign of a precomputed SHA-256 digest (`key.sign(digest, PKCS1v15, Prehashed)`): "
        f"median {median['bare']:.3f} ms over {len(times['bare']):,}",
        f"- our signer (parse, relaxed canonicalisation, body and header hashes, RSA through OpenSSL, folding): "
        f"median {median['ours']:.3f} ms over {len(times['ours']):,} = {1000 / median['ours']:,.0f} messages/s; "
        f"p95 {percentile(times['ours'], 95) * 1000:.3f} ms",
        f"- dkimpy's `dkim.sign` as the old signer called it: median {median['dkimpy']:.2f} ms over "
        f"{len(times['dkimpy']):,}; dkimpy / ours = {median['dkimpy'] / median['ours']:.1f}x",
        f"- ours: {median['ours']:.3f} ms (goal <= {GOAL_MS} ms): {verdict}; ours / bare RSA = {ratio:.2f} "
        f"(limit {GOAL_RATIO}, i.e. {GOAL_RATIO * median['bare']:.2f} ms on this run's machine): {ratio_verdict}",
        "- our header is byte-identical to dkimpy's for the same second, and dkimpy verifies it",
        f"- Ed25519 (RFC 8463), same message: OpenSSL's bare Ed25519 sign of the 32-byte digest: median "
        f"{median['bare_ed25519']:.3f} ms over {len(times['bare_ed25519']):,}; our ed25519-sha256 header alone: "
        f"median {median['ours_ed25519']:.3f} ms over {len(times['ours_ed25519']):,}; Ed25519 / RSA header = "
        f"{median['ours_ed25519'] / median['ours']:.2f}",
        f"- our signer with both keys (one parse and body hash, the RSA then the Ed25519 header, as the Mailer signs "
        f"with ed25519_selector set): median {median['both']:.3f} ms over {len(times['both']):,} = "
        f"{1000 / median['both']:,.0f} messages/s; p95 {percentile(times['both'], 95) * 1000:.3f} ms; "
        f"+{median['both'] - median['ours']:.3f} ms over RSA alone",
        f"- both keys: {median['both']:.3f} ms (goal <= {GOAL_MS} ms): {both_verdict}; both / bare RSA = "
        f"{both_ratio:.2f} (limit {GOAL_RATIO}): {both_ratio_verdict}",
        "- our Ed25519 header is byte-identical to dkimpy's for the same second, and dkimpy verifies both signatures",
    ]
    print("\n".join(lines))
    if args.record:
        record("DKIM signing (issue 17)", lines)
    return 0 if verdict == ratio_verdict == both_verdict == both_ratio_verdict == "PASS" else 1


def timed(call: Callable[[], bytes], count: int) -> list[float]:
    """Seconds per call of ``call``, ``count`` times."""
    clock = time.perf_counter
    out: list[float] = []
    for _ in range(count):
        started = clock()
        call()
        out.append(clock() - started)
    return out


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))]


def digest_message(work: Path) -> bytes:
    """A personalised digest as the service builds it (not signed), the one of the combinations nearest 30 KiB."""
    config = work / "config.toml"
    config.write_text(
        f'[site]\ntitle = "News Example"\nbase_url = "https://news.example.org"\n'
        f'[database]\nurl = "sqlite:///{work / "store.db"}"\n'
        f'[mail]\nfrom_address = "digest@news.example.org"\nfrom_name = "News Example Digest"\n'
        f"{bench_themes_toml()}",
        "utf-8",
    )
    settings = load_settings(config, environ={})
    init_store(settings)
    with Service.open(settings, fixed_clock(UNTIL)) as service:
        import_file(service, write_posts(work / "posts.jsonl", POSTS))
        renderer = MailRenderer(settings)
        links = links_of(settings.site.base_url, 42)
        candidates: list[bytes] = []
        for followed in theme_combinations(service)[:20]:
            digest = compose(service, SINCE, UNTIL, followed)
            assert digest is not None
            variant = renderer.render_digest(digest, settings.digest.languages[0], PLACEHOLDERS)
            candidates.append(
                personalised_message(
                    service.mailer,
                    variant,
                    to_address="reader42@example.org",
                    to_name="Ana Pérez 42",
                    links=links,
                    date=UNTIL,
                    message_key="edition-1.42",
                    extra=list_headers(links),
                )
            )
    return min(candidates, key=lambda candidate: abs(len(candidate) - TARGET_BYTES))


def dkimpy_header(message: bytes, pem: bytes, selector: str = SELECTOR, algorithm: bytes = b"rsa-sha256") -> bytes:
    """The DKIM-Signature header as the dkimpy-based signer made it: parse for the header list, then dkim.sign
    (``pem`` as dkimpy takes the key of ``algorithm``: for ed25519-sha256 the base64 of its seed)."""
    headers, _body = dkim.rfc822_parse(message)
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        lowered = bytes(name).lower()
        counts[lowered] = counts.get(lowered, 0) + 1
    include = [name for name in SIGNED_HEADERS for _ in range(counts.get(name, 0))] + list(OVERSIGNED_HEADERS)
    header = dkim.sign(
        message,
        selector.encode(),
        DOMAIN.encode(),
        pem,
        signature_algorithm=algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
        linesep=b"\r\n",
    )
    assert isinstance(header, bytes)
    return header


def check(message: bytes, key_file: Path, key: rsa.RSAPrivateKey, pem: bytes) -> None:
    """Ours equals dkimpy's for the same second (dkimpy's clock read before and after ours), and verifies."""
    for _ in range(3):
        before = int(time.time())
        theirs = dkimpy_header(message, pem)
        ours = signature_header(message, SELECTOR.encode(), DOMAIN.encode(), load_key(key_file), timestamp=before)
        if int(time.time()) == before:
            break
    assert ours == theirs, (ours, theirs)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record_txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.verify(ours + message, dnsfunc=lambda name, timeout=5: record_txt)


def check_ed25519(
    message: bytes,
    sign_both: Callable[[bytes], bytes],
    key_file: Path,
    key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    """The signer with both keys writes our RSA header (dkimpy's, by ``check``) then dkimpy's Ed25519 one for the
    same second, and dkimpy verifies both against the records check-mail prints."""
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for _ in range(3):
        before = int(time.time())
        signed = sign_both(message)
        rsa_header = signature_header(message, SELECTOR.encode(), DOMAIN.encode(), load_key(key_file), timestamp=before)
        ed_header = dkimpy_header(message, base64.b64encode(seed), ED25519_SELECTOR, b"ed25519-sha256")
        if int(time.time()) == before:
            break
    assert signed == rsa_header + ed_header + message, (signed[:1200], rsa_header, ed_header)
    rsa_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    zone = {
        f"{SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
        f"{ED25519_SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public),
    }
    for index in (0, 1):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=lambda name, timeout=5: zone.get(name)), index


def signature_tags(signed: bytes) -> int:
    """How many header names the h= tag of ``signed``'s signature lists."""
    header = signed.split(b"\r\n\r\n", 1)[0]
    value = b"".join(header.split(b"\r\n ")).split(b"h=", 1)[1].split(b";", 1)[0]
    return len(value.split(b":"))


if __name__ == "__main__":
    raise SystemExit(main())
