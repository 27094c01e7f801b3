"""A real IMAP server for tests: a private Dovecot instance in a folder of its own, on a loopback port.

    with imap_server(tmp_path / "dovecot") as server:
        with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password) as box:
            box.append(message_bytes, "INBOX")

The instance is not the system's Dovecot: it runs ``dovecot -F -c CONF`` with a configuration written here
(``dovecot.conf`` under ``folder``) and its log in ``folder/dovecot.log`` (``server.logs()``); its sockets, its
passwd-file and its mail (Maildirs, ``server.maildir``) are in a short temporary folder of its own (unix socket
paths are limited to about 100 characters, and the unprivileged processes must reach them), removed at the end.
One user logs in, from the passwd-file (``server.user``, ``server.password``, PLAIN over a connection without TLS:
``ssl = no``). Its only listener is IMAP on 127.0.0.1 at a free port (``server.port``).

Run as root, the mail belongs to ``nobody`` (Dovecot refuses UID 0 for mail) and the login processes run as
Debian's ``dovenull``/``dovecot`` users; run as another user, everything runs as that user. Where Dovecot is not
installed (``apt-get install dovecot-imapd``; CI installs it), :func:`imap_server` skips the test with the reason
(:func:`dovecot_unavailable`, or ``requires_dovecot`` as a mark).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_SECONDS = 20.0
STOP_SECONDS = 10.0


def dovecot_unavailable() -> str | None:
    """Why a private Dovecot cannot run here (a skip reason), or None when it can."""
    if not os.access(DOVECOT, os.X_OK):
        return "Dovecot is not installed (apt-get install dovecot-imapd); CI installs it"
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                return f"the {user} user is missing (reinstall Debian's dovecot-core)"
    return None


_UNAVAILABLE = dovecot_unavailable()
requires_dovecot = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


@dataclass(frozen=True)
class ImapServer:
    """A running instance: where it listens, who may log in, where its files are."""

    host: str
    port: int
    user: str
    password: str
    folder: Path
    #: The user's Maildir (INBOX; other folders are ``.Name`` inside it), in the runtime folder.
    maildir: Path

    def logs(self) -> str:
        log = self.folder / "dovecot.log"
        return log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def imap_server(folder: Path, *, user: str = "bounces", password: str = "imap-test-password") -> Iterator[ImapServer]:
    """Start a private Dovecot with its files under ``folder``; stop it (and wait for it) on leaving."""
    reason = dovecot_unavailable()
    if reason is not None:
        pytest.skip(reason)
    folder.mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="dovecot-"))
    port = free_port()
    # What the login, auth and mail processes read or write lives in the runtime folder (under /tmp, open to
    # them): the passwd-file and the Maildirs. The configuration and the log stay in ``folder``.
    runtime.chmod(0o755)
    if os.geteuid() == 0:
        mail_owner = pwd.getpwnam("nobody")
        internal_user, login_user = "dovecot", "dovenull"
    else:
        mail_owner = pwd.getpwuid(os.geteuid())
        internal_user = login_user = mail_owner.pw_name
    mail = runtime / "mail"
    mail.mkdir()
    if os.geteuid() == 0:
        os.chown(mail, mail_owner.pw_uid, mail_owner.pw_gid)
    users = runtime / "users"
    users.write_text(
        f"{user}:{{PLAIN}}{password}:{mail_owner.pw_uid}:{mail_owner.pw_gid}::{mail}/{user}\n", encoding="utf-8"
    )
    users.chmod(0o644)
    config = folder / "dovecot.conf"
    config.write_text(
        _CONFIG.format(
            runtime=runtime / "run",
            log=folder / "dovecot.log",
            users=users,
            mail=mail,
            port=port,
            internal_user=internal_user,
            login_user=login_user,
            first_uid=min(mail_owner.pw_uid, 500) or 1,
        ),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ImapServer(HOST, port, user, password, folder, mail / user)
    try:
        _wait_for_greeting(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(runtime, ignore_errors=True)


def _wait_for_greeting(server: ImapServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode("utf-8", "replace") if process.stdout is not None else ""
            raise RuntimeError(f"dovecot exited with {process.returncode}: {output}\n{server.logs()}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as connection:
                if connection.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(
        f"dovecot did not answer on {server.host}:{server.port} within {START_SECONDS}s\n{server.logs()}"
    )


_CONFIG = """\
# A private test instance: see tests/imap_server.py.
protocols = imap
listen = 127.0.0.1
base_dir = {runtime}
state_dir = {runtime}/state
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# Loopback is trusted: no growing delay (anvil's auth penalty) for logins after a test's wrong password.
login_trusted_networks = 127.0.0.0/8
default_internal_user = {internal_user}
default_internal_group = {internal_user}
default_login_user = {login_user}
first_valid_uid = {first_uid}
mail_location = maildir:~
mail_plugins =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
