"""The only two cookies: the editor's session and the CSRF cookie of every form.

Both are signed tokens (``syndication.core.tokens``, keyed by ``SYNDICATION_SECRET_KEY``; the old keys of a rotation
still read), ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` whenever ``site.base_url`` is https.

- ``syndication_session`` (path ``/editor``, ``[editors] session_hours``): the random id of a session kept in
  the store (``app.team``), which says whose it is and whether it still signs them in: signing out, an owner
  revoking it, or a new password ends it there, so that no copy of the cookie signs in.
- ``syndication_csrf`` (path ``/``, until the browser closes; the token inside is refused after a day): a random
  value that every form repeats in a hidden field (the double-submit pattern). A page on another site can make a
  browser post a form here, but cannot read or set this cookie, so it cannot repeat it; ``SameSite=Lax`` keeps
  the cookie off cross-site posts in the first place, and a ``Sec-Fetch-Site: cross-site`` post is refused too.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from syndication.app.service import Service
from syndication.app.team import sign_out, signed_in
from syndication.config import Settings, signing_keys
from syndication.core.team import SignedIn
from syndication.core.tokens import make_token, read_token
from syndication.errors import ConfigError, TokenError

SESSION_COOKIE: Final = "syndication_session"
CSRF_COOKIE: Final = "syndication_csrf"
CSRF_FIELD: Final = "csrf_token"
SESSION_PATH: Final = "/editor"
_UNKNOWN: Final = object()  # the request's editor was not looked up yet


@dataclass
class CsrfToken:
    """The CSRF token of one response: the request's own, or a new one once a form asked for it."""

    existing: str | None
    make: Callable[[], str]  # called at most once
    made: str | None = None

    @property
    def new(self) -> bool:
        """Whether a new token was made (and so must be set as the cookie)."""
        return self.made is not None

    @property
    def token(self) -> str:
        """The token (made now if the request had none)."""
        if self.existing:
            return self.existing
        if self.made is None:
            self.made = self.make()
        return self.made


class Cookies:
    """Reads and writes the session and CSRF cookies of one site."""

    def __init__(self, settings: Settings, service: Callable[[], Service]) -> None:
        self.settings = settings
        self.service = service  # the open store, where signed-out sessions are kept
        self.secure = settings.site.base_url.startswith("https://")
        self.session_seconds = int(settings.editors.session_hours * 3600)

    # --- CSRF -------------------------------------------------------------------------------------------------

    def csrf_for(self, request: Request) -> CsrfToken:
        """The request's valid CSRF token, or one made when a form first asks for it.

        Without a signing key no token can be made: forms then carry an empty one and their posts are answered
        "not available" (the key is a configuration error the log names), while pages without forms still work.
        """
        current = request.cookies.get(CSRF_COOKIE)
        if current and self._readable(current, "csrf"):
            return CsrfToken(current, _nothing)
        return CsrfToken(None, self._new_csrf)

    def set_csrf(self, response: Response, token: str) -> None:
        """Set the CSRF cookie (for this browser session only)."""
        response.set_cookie(CSRF_COOKIE, token, path="/", secure=self.secure, httponly=True, samesite="lax")

    def csrf_ok(self, request: Request, form: Mapping[str, str]) -> bool:
        """Whether a form post repeats this browser's valid CSRF cookie and did not come from another site.

        Raises ConfigError when there is no signing key to check it with.
        """
        signing_keys(self.settings)  # no key: say so (ConfigError) rather than refuse every form as forged
        if request.headers.get("sec-fetch-site") == "cross-site":
            return False
        cookie = request.cookies.get(CSRF_COOKIE, "")
        field = form.get(CSRF_FIELD, "")
        if not cookie or not field or not hmac.compare_digest(cookie.encode(), field.encode()):
            return False
        return self._readable(cookie, "csrf")

    def _new_csrf(self) -> str:
        try:
            return make_token(signing_keys(self.settings), "csrf", secrets.token_urlsafe(18))
        except ConfigError:
            return ""

    # --- Editor sessions --------------------------------------------------------------------------------------

    async def editor(self, request: Request) -> SignedIn | None:
        """Who is signed in, as they are now (their role included), or None: no cookie, expired, forged, or a
        session that ended (signed out, revoked by an owner, their password changed, or they left the team).
        Asked of the store once per request."""
        known = getattr(request.state, "editor", _UNKNOWN)
        if known is None or isinstance(known, SignedIn):
            return known
        session_id = self._session_id(request)
        who = None
        if session_id is not None:
            # In the thread pool, store and all: the first request opens the store, which asks the database.
            who = await run_in_threadpool(lambda: signed_in(self.service(), session_id))
        request.state.editor = who
        return who

    def start_session(self, response: Response, session_id: str) -> None:
        """Set the cookie of session ``session_id`` (``app.team.start_session``) on ``response``, with a new CSRF
        cookie (no token from before signing in survives)."""
        token = make_token(self._keys(), "session", session_id)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=self.session_seconds,
            path=SESSION_PATH,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        self.set_csrf(response, self._new_csrf())

    async def end_session(self, request: Request, response: Response) -> None:
        """Sign out: the session ends in the store, and the cookie is deleted."""
        session_id = self._session_id(request)
        if session_id is not None:
            await run_in_threadpool(lambda: sign_out(self.service(), session_id))
        response.delete_cookie(SESSION_COOKIE, path=SESSION_PATH, secure=self.secure, httponly=True, samesite="lax")

    def _session_id(self, request: Request) -> str | None:
        """The session id of a valid session cookie (the store not asked yet)."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            return None
        try:
            session_id = read_token(self._keys(), "session", value, self.session_seconds)
        except (TokenError, ConfigError):
            return None
        if not re.fullmatch(r"[0-9a-f]{32}", session_id):
            return None  # a cookie from before sessions were kept in the store: sign in again
        return session_id

    def _keys(self) -> list[str]:
        return signing_keys(self.settings)

    def _readable(self, token: str, purpose: str) -> bool:
        try:
            read_token(self._keys(), purpose, token)
        except (TokenError, ConfigError):
            return False
        return True


def _nothing() -> str:
    return ""
