"""The web pages' Jinja2 templates (``templates/web``), their stylesheet and script, and the headers every page
carries.

Pages are plain server-rendered HTML: autoescaped, ``StrictUndefined`` (a missing value is a bug, not an empty
string), one layout (``base.html``) that every page extends. The stylesheet and the one script (live delivery
progress) are files of their own under ``/assets/``, never inline, so the Content-Security-Policy can forbid
inline script and style outright, and nothing is fetched from anywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from syndication.config import Settings
from syndication.resources import web_templates
from syndication.web.errors import PageError, sentence
from syndication.web.forms import FORM_EXPIRED, Form, FormRefused, read_form
from syndication.web.sessions import Cookies

TEMPLATES: Final = web_templates()
ASSETS: Final = {"site.css": "text/css; charset=utf-8", "progress.js": "text/javascript; charset=utf-8"}

# Pages of our own: nothing but our own files, no inline script or style, never framed.
PAGE_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# An email shown as a page (view in browser, the editor's preview): its inline styles and remote images as a
# mail client shows them, no script at all, framed only by our own editor page.
EMAIL_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; form-action 'none';"
    " frame-ancestors 'self'; base-uri 'none'"
)


def page_headers(*, private: bool = True, referrer: str = "same-origin") -> dict[str, str]:
    """Headers of a page: its policy, and ``no-store`` for pages that hold a form, a token or an editor's view.

    Pages reached by a signed link say ``Referrer-Policy: no-referrer`` (``referrer``), so the link's token is not
    sent to the sites its page links to.
    """
    headers = {
        "Content-Security-Policy": PAGE_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": referrer,
    }
    if private:
        headers["Cache-Control"] = "no-store"
    return headers


def email_headers(*, private: bool) -> dict[str, str]:
    """Headers of an email shown as a page."""
    return {
        "Content-Security-Policy": EMAIL_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store" if private else "public, max-age=300",
    }


@dataclass(frozen=True)
class Asset:
    """A static file of the pages, with its content hash (its ETag, and the ``?v=`` of its URL)."""

    body: bytes
    content_type: str
    version: str


class Pages:
    """Renders the pages of one site."""

    def __init__(self, settings: Settings, cookies: Cookies) -> None:
        self.settings = settings
        self.cookies = cookies
        # A site's folder first (``[web] templates_dir``): its files replace the shipped ones of the same name.
        folders = [folder for folder in (settings.web.templates_dir, TEMPLATES) if folder is not None]
        self.assets = {name: _asset(_first(folders, name), kind) for name, kind in ASSETS.items()}
        self.environment = Environment(
            loader=FileSystemLoader([str(folder) for folder in folders]),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        zone = ZoneInfo(settings.site.timezone)
        self.environment.filters["when"] = lambda moment: _when(moment, zone)
        self.environment.filters["day"] = lambda moment: moment.astimezone(zone).strftime("%-d %b %Y")
        self.environment.globals["site"] = settings.site
        self.environment.globals["asset"] = lambda name: f"/assets/{name}?v={self.assets[name].version}"

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        editor: str | None = None,
    ) -> HTMLResponse:
        """``name`` rendered for ``request`` with a CSRF token for its forms (the cookie is set when new)."""
        csrf = self.cookies.csrf_for(request)
        # A callable, so that only a page with a form makes a token and sets the cookie.
        values = {"csrf_token": lambda: csrf.token, "editor": editor, "path": request.url.path, **(context or {})}
        body = self.environment.get_template(name).render(values)
        response = HTMLResponse(body, status_code=status, headers={**page_headers(), **(headers or {})})
        if csrf.new:
            self.cookies.set_csrf(response, csrf.token)
        return response

    def message(
        self,
        request: Request,
        title: str,
        paragraphs: list[str],
        *,
        status: int = 200,
        links: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        editor: str | None = None,
    ) -> HTMLResponse:
        """A page that only says something: a title, a few paragraphs of plain text and links onwards."""
        context = {"title": title, "paragraphs": paragraphs, "links": links or []}
        return self.render(request, "message.html", context, status=status, headers=headers, editor=editor)

    async def form(self, request: Request) -> Form:
        """The request's form; PageError saying why it was refused (encoding, size, sent in part)."""
        try:
            return await read_form(request)
        except FormRefused as error:
            raise PageError(error.status, "This form was not sent right", [sentence(error.reason)]) from error

    def check_csrf(
        self, request: Request, form: Form, back: tuple[str, str], *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Refuse (PageError 403, asking to send it again, with a link ``back`` (path, label) to the form) a form
        without this browser's CSRF token. ConfigError when no signing key is configured."""
        if not self.cookies.csrf_ok(request, form):
            raise PageError(403, "Please try again", [FORM_EXPIRED], links=[back], headers=headers or {})

    def asset_routes(self) -> list[Route]:
        """``/assets/<name>``: the stylesheet and the script, cacheable for a year under their versioned URL."""

        async def serve(request: Request) -> Response:
            asset = self.assets.get(request.path_params["name"])
            if asset is None:
                return Response("Not found\n", status_code=404, media_type="text/plain")
            etag = f'"{asset.version}"'
            headers = {
                "ETag": etag,
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            }
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(asset.body, media_type=asset.content_type, headers=headers)

        return [Route("/assets/{name}", serve, methods=["GET"])]


def _first(folders: list[Path], name: str) -> Path:
    """``name`` in the first of ``folders`` that has it (the last folder, the shipped one, has every file)."""
    return next((folder / name for folder in folders if (folder / name).is_file()), folders[-1] / name)


def _asset(path: Path, content_type: str) -> Asset:
    body = path.read_bytes()
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:12])


def _when(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(zone).strftime("%a %-d %b %Y, %H:%M %Z")
