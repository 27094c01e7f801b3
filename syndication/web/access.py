"""Who may use each editor page: every route under ``/editor`` is declared here with what it needs
(``core.team.Access``: read, edit, manage) or as open to anyone (signing in, accepting an invitation, resetting a
password), and the check is made in one place before the page's handler runs.

Without a session a page sends to the sign-in page (and back after it); a ``.json`` route answers 401. A role that
does not allow the route is answered 403, worded in the page's language. The handler finds who is signed in with
``signed_in(request)``. ``Gate.rules`` is the table the role tests walk: a route not made here has no rule, and
those tests fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from syndication.core.team import Access, Role, SignedIn
from syndication.web.errors import PageError
from syndication.web.languages import N_, Words
from syndication.web.templating import Pages

# Each role's name as the pages say it.
ROLE_NAMES: Final = {Role.OWNER: N_("owner"), Role.EDITOR: N_("editor"), Role.VIEWER: N_("viewer")}
OPEN: Final = None  # a route anyone may use (the page itself checks what it is given)
Handler = Callable[[Request], Awaitable[Response]]


class Gate:
    """Makes the editor routes, each behind the check of what it needs."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.cookies = pages.cookies
        self.rules: dict[tuple[str, str], Access | None] = {}

    def route(
        self,
        path: str,
        handler: Handler,
        *,
        method: str,
        needs: Access | None,
        back: Callable[[Request], str] | None = None,
    ) -> Route:
        """The route ``method path`` to ``handler``, for people whose role allows ``needs`` (``OPEN``: anyone).
        ``back`` is where to return to after signing in when a post came without a session (default: the
        dashboard; a page returns to itself)."""
        if (method, path) in self.rules:
            raise ValueError(f"{method} {path} is declared twice")
        self.rules[(method, path)] = needs
        if needs is None:
            return Route(path, handler, methods=[method])
        access: Access = needs

        async def checked(request: Request) -> Response:
            who = await self.cookies.editor(request)
            words = self.pages.words(request)
            wants_json = request.url.path.endswith(".json")
            if who is None:
                if wants_json:
                    return JSONResponse({"error": "sign in first"}, status_code=401, headers=_NO_STORE)
                if method == "GET":
                    return to_login(request, words)
                return to_login(request, words, back=back(request) if back else "/editor/")
            if not who.may(access):
                if wants_json:
                    return JSONResponse({"error": "your role cannot do this"}, status_code=403, headers=_NO_STORE)
                raise PageError(
                    403,
                    words.gettext("Not allowed"),
                    [
                        words.gettext(
                            "Your role (%(role)s) does not allow this. An owner of the team can change it.",
                            role=words.gettext(ROLE_NAMES[who.role]),
                        )
                    ],
                    links=[(words.url("/editor/"), words.gettext("Back to the dashboard"))],
                )
            return await handler(request)

        return Route(path, checked, methods=[method], name=getattr(handler, "__name__", None))


def signed_in(request: Request) -> SignedIn:
    """Who is signed in on a page behind the gate (checked before its handler ran)."""
    who: SignedIn | None = getattr(request.state, "editor", None)
    if who is None:
        raise RuntimeError(f"{request.url.path} is not behind the gate")
    return who


def to_login(request: Request, words: Words, back: str | None = None) -> Response:
    """Off to the sign-in page, and back to ``back`` (default: this page) after it."""
    wanted = back or (request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(words.url(f"/editor/login?next={quote(wanted, safe='/')}"), status_code=303)


_NO_STORE: Final = {"Cache-Control": "no-store"}
