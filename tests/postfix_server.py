"""A real Postfix (Debian's ``postfix``) for tests: a private instance in a folder of its own, on loopback ports.

    with postfix_relay(tmp_path / "postfix", next_hop_port=hop.port, bounce_domain="news.example.org",
                       bounce_lmtp_port=sink.port) as relay:
        smtplib.SMTP("127.0.0.1", relay.smtp_port).sendmail(...)
        relay.wait_until_queue_empty(15)

The instance is not the system's Postfix: its configuration directory (``etc/``: ``main.cf`` and ``master.cf``,
written here), queue directory (``queue/``, with its data directory ``queue/data``) and log (``maillog``) all live
under ``folder``. Its only listener is an ``smtpd`` on 127.0.0.1 at a free port (``relay.smtp_port``), which takes
mail from 127.0.0.0/8 and relays every message to ``[127.0.0.1]:next_hop_port``, except mail for
``bounce_domain`` (where the service's VERP bounce addresses live), which it hands over by LMTP to
``127.0.0.1:bounce_lmtp_port``. A recipient that the next hop refuses with a 5xx after Postfix accepted the
message makes Postfix send its own DSN (a multipart/report, from the null sender) at once to the envelope sender:
with a VERP sender, to the LMTP listener. Nothing needs DNS; retries come within a second or two, and a message
deferred for a minute is bounced, so a test runs in seconds. ``settings`` changes any main.cf parameter.

How it runs: as root, ``postfix -c DIR`` takes any configuration directory (the check against the default
instance's ``alternate_config_directories`` is made for other users only), so the system's Postfix configuration
is neither needed nor changed. ``postfix -c DIR start`` makes the queue's subfolders with their owners
(``postfix``, group ``postdrop``) and starts the instance's own master daemon, which detaches once its listener
is bound, leading a process group of its own with the daemons it starts; ``postfix -c DIR stop`` ends it, and the
harness then waits until no process of that group is left (SIGKILL to the group after ``stop_timeout``). Postfix
logs to ``folder/maillog`` (``maillog_file`` with the ``postlog`` service), read by ``relay.logs()``;
``relay.queue()`` lists what is queued (``postqueue -j``).

Where Postfix is not installed (``apt-get install postfix``; CI installs it) or the tests do not run as root
(Postfix's master starts as root and its daemons drop to the ``postfix`` user), :func:`postfix_relay` skips the
test with the reason (:func:`postfix_unavailable`, or ``requires_postfix`` as a mark).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from syndication.config import SmtpSettings

HOST = "127.0.0.1"
POSTFIX = Path("/usr/sbin/postfix")
POSTQUEUE = Path("/usr/sbin/postqueue")
DAEMON_DIRECTORY = Path("/usr/lib/postfix/sbin")


def postfix_unavailable() -> str | None:
    """Why a private Postfix cannot run here (a skip reason), or None when it can."""
    if not (os.access(POSTFIX, os.X_OK) and os.access(POSTQUEUE, os.X_OK)):
        return "Postfix is not installed (apt-get install postfix); CI installs it"
    if not (DAEMON_DIRECTORY / "master").exists():
        return f"Postfix's daemons are not in {DAEMON_DIRECTORY}"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its daemons start as root and drop to the postfix user)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or the postdrop group is missing (reinstall Debian's postfix)"
    return None


_UNAVAILABLE = postfix_unavailable()
requires_postfix = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")

# The daemons of the instance, each with the settings of Debian's master.cf except chroot (n: no jail to copy
# files into). The smtpd line is added with its port; nothing else listens on the network.
_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass(frozen=True)
class PostfixRelay:
    """A running private Postfix; see the module's description."""

    folder: Path
    smtp_port: int
    next_hop_port: int
    bounce_domain: str
    bounce_lmtp_port: int
    master_pid: int = 0
    host: str = HOST

    @property
    def config_directory(self) -> Path:
        return self.folder / "etc"

    @property
    def queue_directory(self) -> Path:
        return self.folder / "queue"

    @property
    def maillog(self) -> Path:
        return self.folder / "maillog"

    def logs(self) -> str:
        """Everything the instance logged so far (its maillog)."""
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queue(self) -> list[dict[str, Any]]:
        """The messages still queued (incoming, active, deferred, hold), as ``postqueue -j`` describes them."""
        result = _run([str(POSTQUEUE), "-c", str(self.config_directory), "-j"])
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """Retry every deferred message now (``postqueue -f``)."""
        _run([str(POSTQUEUE), "-c", str(self.config_directory), "-f"])

    def wait_until_queue_empty(self, timeout: float = 15.0) -> None:
        """Wait until Postfix holds no message (each delivered, or bounced and its DSN delivered).

        Raises TimeoutError, with what is still queued and the log, when the queue is not empty in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            queued = self.queue()
            if not queued:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Postfix's queue is not empty after {timeout} s:\n"
                    + "\n".join(json.dumps(message) for message in queued)
                    + f"\n--- {self.maillog} ---\n{self.logs()}"
                )
            time.sleep(0.1)

    def smtp_settings(self, **overrides: Any) -> SmtpSettings:
        """SmtpSettings that reach the instance's smtpd (plain SMTP, no AUTH), as a service's relay."""
        values: dict[str, Any] = {"host": self.host, "port": self.smtp_port, "security": "none"}
        values["timeout_seconds"] = 10.0
        values.update(overrides)
        return SmtpSettings(**values)

    def postfix(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c DIR ARGUMENTS...`` on this instance (RuntimeError with the output when it fails)."""
        return _run([str(POSTFIX), "-c", str(self.config_directory), *arguments])


def main_cf(
    folder: Path,
    next_hop_port: int,
    bounce_domain: str,
    bounce_lmtp_port: int,
    settings: Mapping[str, str] | None = None,
) -> str:
    """The instance's main.cf: relay everything to the next hop, mail for ``bounce_domain`` to the LMTP port."""
    values: dict[str, str] = {
        "compatibility_level": "3.6",
        # Everything of the instance under the folder; logging to a file of its own, not syslog. The data
        # directory is named relative to the queue directory, where every daemon works: the postfix user could
        # not reach it by an absolute name under pytest's folders (root's, mode 0700).
        "queue_directory": str(folder / "queue"),
        "data_directory": "data",
        "maillog_file": str(folder / "maillog"),
        "maillog_file_prefixes": str(folder),
        "multi_instance_enable": "no",
        # Loopback only, IPv4, no DNS (the machine has no network), no local delivery.
        "inet_interfaces": HOST,
        "inet_protocols": "ipv4",
        "myhostname": "relay.test",
        "mydomain": "relay.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "local_recipient_maps": "",
        "local_transport": "error:no local mail",
        "alias_maps": "",
        "alias_database": "",
        "mynetworks": "127.0.0.0/8",
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "lmtp_host_lookup": "native",
        "lmtp_dns_support_level": "disabled",
        "smtpd_peername_lookup": "no",
        # Every message goes to the next hop, except the DSNs to the bounce domain, which go to the LMTP listener.
        "relayhost": f"[{HOST}]:{next_hop_port}",
        "relay_domains": bounce_domain,
        "transport_maps": f"inline:{{ {bounce_domain}=lmtp:inet:[{HOST}]:{bounce_lmtp_port} }}",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "smtp_skip_5xx_greeting": "yes",
        # Refused recipients bounce at once; deferred ones are retried within a second or two, and given up
        # after a minute (so a test that defers on purpose sees the DSN soon).
        "soft_bounce": "no",
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "maximal_queue_lifetime": "1m",
        "bounce_queue_lifetime": "1m",
        "delay_warning_time": "0h",
        "smtp_connect_timeout": "5s",
        "lmtp_connect_timeout": "5s",
        "in_flow_delay": "0s",
        "smtpd_error_sleep_time": "0s",
        # No copies of bounces or errors to a postmaster (there is no local delivery for one).
        "notify_classes": "",
        "biff": "no",
        "smtputf8_enable": "no",
    }
    values.update(settings or {})
    return "".join(f"{name} = {value}\n" for name, value in values.items())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def postfix_relay(
    folder: Path,
    *,
    next_hop_port: int,
    bounce_domain: str,
    bounce_lmtp_port: int,
    settings: Mapping[str, str] | None = None,
    stop_timeout: float = 10.0,
) -> Iterator[PostfixRelay]:
    """A private Postfix under ``folder`` (created), started, and stopped with all its processes on the way out.

    ``settings`` adds to or replaces main.cf parameters. Skips the test where Postfix cannot run.
    """
    reason = postfix_unavailable()
    if reason is not None:
        pytest.skip(reason)
    folder = folder.absolute()
    _prepare(folder, main_cf(folder, next_hop_port, bounce_domain, bounce_lmtp_port, settings))
    relay = _start(folder, next_hop_port, bounce_domain, bounce_lmtp_port)
    try:
        yield relay
    finally:
        _stop(relay, stop_timeout)


def _prepare(folder: Path, main: str) -> None:
    """The instance's folders and main.cf (``postfix start`` makes the queue's subfolders, owned right)."""
    for directory in (folder / "etc", folder / "queue" / "data"):
        directory.mkdir(parents=True, exist_ok=True)
    # The data directory (master.lock, caches) is the postfix user's; see data_directory in main_cf.
    shutil.chown(folder / "queue" / "data", user="postfix", group="postfix")
    (folder / "etc" / "main.cf").write_text(main)


def _start(folder: Path, next_hop_port: int, bounce_domain: str, bounce_lmtp_port: int) -> PostfixRelay:
    """Start the instance on a free port (another, if that one was taken meanwhile)."""
    for attempt in range(3):
        relay = PostfixRelay(folder, free_port(), next_hop_port, bounce_domain, bounce_lmtp_port)
        (relay.config_directory / "master.cf").write_text(
            f"{HOST}:{relay.smtp_port} inet n - n - - smtpd\n" + _MASTER_CF
        )
        logged = len(relay.logs())
        try:
            # Makes the queue's missing subfolders (post-install create-missing), checks the installation, and
            # starts the master daemon, which detaches once its listener is bound (master -w).
            relay.postfix("start")
        except RuntimeError:
            if attempt < 2 and "Address already in use" in relay.logs()[logged:]:
                continue
            raise
        master = int((relay.queue_directory / "pid" / "master.pid").read_text().split()[0])
        return replace(relay, master_pid=master)
    raise AssertionError("unreachable")


def _stop(relay: PostfixRelay, timeout: float) -> None:
    """``postfix stop``, then wait until no process of the master's group is left (SIGKILL after ``timeout``)."""
    with suppress(RuntimeError):  # not running any more: its processes are still looked for below
        relay.postfix("stop")
    if relay.master_pid <= 0:  # never started (no group to look for; killpg(0) would be our own)
        return
    deadline = time.monotonic() + timeout
    while process_group_alive(relay.master_pid):
        if time.monotonic() >= deadline:
            with suppress(ProcessLookupError):
                os.killpg(relay.master_pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def process_group_alive(group: int) -> bool:
    """Whether a process of this process group is still running (zombies, dead already, do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a Postfix command; RuntimeError with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}".rstrip()
        )
    return result
