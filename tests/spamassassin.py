"""SpamAssassin for tests: score a message as a receiving mail server would, with local rules only.

    verdict = check(received.data)   # or: points, rules = score(received.data)
    assert verdict.score < 2.0, verdict.describe()

Debian's ``spamassassin`` runs once per message (about a second of start-up each) with the rules it ships in
/usr/share/spamassassin (``sa-update`` needs the network, so it is never run), ``--local`` (no DNS, no
blocklists, no Razor, Pyzor or DCC) and a fresh home in a temporary folder: no Bayes, no auto-welcomelist and no
user preferences but the ones set here. Network rules (SPF, DKIM validity, DNSBLs) therefore never fire; a rule
that looks only at the message does, as it would at the recipient's end.

A message leaves the service without a ``Received`` header; the first thing the recipient's MX does is stamp one,
and rules compare it with the message's ``Date`` and read the relay's name from it. So :func:`check` prepends one
as Postfix writes it: from the sender's relay into the recipient's MX, dated at reception (``received_at``, now
unless given) in RFC 5322 form. A test that calls it skips, naming the reason, when ``spamassassin`` is not
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

# The relay that hands the message over (the sender's outbound server) and the recipient's MX that stamps it.
# A public address: SpamAssassin calls the documentation ranges of RFC 5737 illegal (RCVD_ILLEGAL_IP, 1.3 points),
# and private ones would make the relay look internal. Nothing is looked up (no DNS), so whose it is does not matter.
SENDER_RELAY = ("mail.news.example.org", "46.4.120.25")
RECIPIENT_MX = "mx.example.net"

# Settings for a run that never touches the network or keeps state between runs.
SETTINGS = (
    "dns_available no",
    "skip_rbl_checks 1",
    "use_bayes 0",
    "bayes_auto_learn 0",
    "use_auto_whitelist 0",
    "use_razor2 0",
    "use_pyzor 0",
    "use_dcc 0",
    # Every rule with its score, on a header of its own (X-Spam-Status gives only names).
    "add_header all Rules _TESTSSCORES(,)_",
)
TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Verdict:
    """SpamAssassin's answer: the total and each rule that fired with its points."""

    score: float
    rules: dict[str, float]

    def describe(self) -> str:
        """``1.2 (DKIM_SIGNED 0.1, HTML_MESSAGE 0.001)``: the total and the rules, biggest first."""
        ranked = sorted(self.rules.items(), key=lambda item: (-item[1], item[0]))
        return f"{self.score:.3f} ({', '.join(f'{name} {points:g}' for name, points in ranked) or 'no rules'})"


def executable() -> str:
    """The path of ``spamassassin``; skips the calling test when it is not installed."""
    path = shutil.which("spamassassin")
    if path is None:
        pytest.skip("spamassassin is not installed (Debian package spamassassin; .ci/run installs it)")
    return path


def received_header(recipient: str, received_at: datetime | None = None) -> bytes:
    """The ``Received`` header the recipient's MX stamps on taking a message for ``recipient``, as Postfix does."""
    when = (received_at or datetime.now(UTC)).astimezone(UTC)
    name, address = SENDER_RELAY
    return (
        f"Received: from {name} ({name} [{address}])\n"
        f"\tby {RECIPIENT_MX} (Postfix) with ESMTPS id 4WxYz1AbCdEf\n"
        f"\tfor <{recipient}>; {format_datetime(when)}\n"
    ).encode("ascii")


def check(message: bytes, received_at: datetime | None = None) -> Verdict:
    """Score ``message`` (the bytes as sent) as received now (or at ``received_at``) by the recipient's MX."""
    program = executable()
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    recipient = email.utils.parseaddr(str(parsed.get("To", "")))[1] or "reader@example.net"
    # Stored as a receiving MTA stores it: its Received header on top, lines ending in LF.
    delivered = received_header(recipient, received_at) + message.replace(b"\r\n", b"\n")
    with tempfile.TemporaryDirectory(prefix="spamassassin-") as folder:
        home = Path(folder)
        prefs = home / "user_prefs"
        prefs.write_text("\n".join(SETTINGS) + "\n", encoding="ascii")
        command = [program, "--local", "--prefspath", str(prefs), "--exit-code"]
        for line in SETTINGS:
            command += ["--cf", line]
        result = subprocess.run(
            command,
            input=delivered,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            check=False,
        )
    # --exit-code: 0 for ham, 1 for spam (at the 5.0 threshold); anything else is a failure to run.
    if result.returncode not in (0, 1):
        raise RuntimeError(f"spamassassin failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return _verdict(result.stdout, result.stderr)


def score(message: bytes, received_at: datetime | None = None) -> tuple[float, list[str]]:
    """The total score of ``message`` and the names of the rules that fired."""
    verdict = check(message, received_at)
    return verdict.score, sorted(verdict.rules)


def _verdict(output: bytes, errors: bytes) -> Verdict:
    headers = email.message_from_bytes(output.split(b"\n\n", 1)[0] + b"\n\n", policy=email.policy.compat32)
    status = _unfolded(headers.get("X-Spam-Status"))
    found = re.search(r"\bscore=(-?[\d.]+)", status)
    if found is None:
        raise RuntimeError(f"spamassassin gave no score: {status!r}; {errors.decode(errors='replace')}")
    rules: dict[str, float] = {}
    for item in filter(None, _unfolded(headers.get("X-Spam-Rules")).replace(" ", "").split(",")):
        name, _, points = item.partition("=")
        rules[name] = float(points)
    # X-Spam-Status rounds to one decimal; the total is the sum of the rules' points.
    total = round(sum(rules.values()), 3) if rules else float(found.group(1))
    return Verdict(total, rules)


def _unfolded(value: object) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip()
