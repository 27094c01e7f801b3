"""The web pages' Jinja2 templates (``templates/web``), their stylesheet and script, and the headers every page
carries.

Pages are plain server-rendered HTML: autoescaped, ``StrictUndefined`` (a missing value is a bug, not an empty
string), one layout (``base.html``) that every page extends. The stylesheet and the one script (live delivery
progress) are files of their own under ``/assets/``, never inline, so the Content-Security-Policy can forbid
inline script and style outright, and nothing is fetched from anywhere else.

Every page is worded in the language ``web.languages`` chooses for its request: one Jinja2 environment per
offered language, with that language's catalog installed (Jinja2's i18n extension, newstyle gettext) and its
dates formatted by Babel. Handlers word what they say from Python (titles, refusals, field errors) with the same
catalog, through ``Pages.words``, which also remembers the choice for the page that answers the request (an
error page too). Each page carries a language switcher (GET pages: links to itself in each language), its
``lang`` attribute, and, on public pages only, ``hreflang`` alternates; pages reached by a signed link are never
listed under another address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from syndication.config import Settings
from syndication.core.languages import text_direction
from syndication.core.team import SignedIn
from syndication.resources import web_templates
from syndication.web.errors import PageError
from syndication.web.forms import FORM_EXPIRED, Form, FormRefused, read_form
from syndication.web.languages import PARAMETER, Languages, Words, with_language
from syndication.web.sessions import Cookies

TEMPLATES: Final = web_templates()
ASSETS: Final = {
    "site.css": "text/css; charset=utf-8",
    "progress.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

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
    """Renders the pages of one site, each in its reader's language."""

    def __init__(self, settings: Settings, cookies: Cookies) -> None:
        self.settings = settings
        self.cookies = cookies
        self.languages = Languages(settings)
        # A site's folder first (``[web] templates_dir``): its files replace the shipped ones of the same name.
        folders = [folder for folder in (settings.web.templates_dir, TEMPLATES) if folder is not None]
        self.assets = {name: _asset(_first(folders, name), kind) for name, kind in ASSETS.items()}
        loader = FileSystemLoader([str(folder) for folder in folders])
        self._environments = {
            tag: self._environment(loader, self.languages.words(tag)) for tag in self.languages.offered
        }

    def _environment(self, loader: FileSystemLoader, words: Words) -> Environment:
        environment = Environment(
            loader=loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # ``{% trans %}`` blocks are wrapped like paragraphs in the templates: their white space is not wording.
        environment.policies["ext.i18n.trimmed"] = True
        environment.install_gettext_translations(words.translations, newstyle=True)  # type: ignore[attr-defined]
        environment.filters["when"] = words.when
        environment.filters["day"] = words.day
        # A theme's name in this language (``[[themes]] names``; its site-language name when it has none here).
        environment.filters["name"] = lambda named: named.name_in(words.language)
        environment.filters["direction"] = text_direction
        environment.globals["site"] = self.settings.site
        environment.globals["asset"] = lambda name: f"/assets/{name}?v={self.assets[name].version}"
        return environment

    def environment(self, language: str) -> Environment:
        """The Jinja2 environment of ``language`` (an offered one; another gets the default language's)."""
        return self._environments[self.languages.words(language).language]

    def words(self, request: Request, subscriber_language: str | None = None) -> Words:
        """The words of the page answering ``request`` (``web.languages``: its ``?lang=``, else
        ``subscriber_language`` on a page reached by a subscriber's link, else Accept-Language, else the site's),
        remembered for the page that answers it, an error page included."""
        words = self.languages.choose(request, subscriber_language)
        request.state.words = words
        return words

    def words_of(self, request: Request) -> Words:
        """The words chosen for ``request`` already (``words``), or chosen now without a subscriber's language."""
        chosen = getattr(request.state, "words", None)
        return chosen if isinstance(chosen, Words) else self.words(request)

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        editor: SignedIn | None = None,
        public: bool = False,
    ) -> HTMLResponse:
        """``name`` rendered for ``request`` in its language, with a CSRF token for its forms (the cookie is set
        when new). ``public``: a page anyone may link to, which lists its other languages' addresses (hreflang);
        never a page reached by a signed link."""
        words = self.words_of(request)
        csrf = self.cookies.csrf_for(request)
        values = {
            # A callable, so that only a page with a form makes a token and sets the cookie.
            "csrf_token": lambda: csrf.token,
            "editor": editor,
            "path": request.url.path,
            "words": words,
            "url": words.url,
            "switcher": self._switcher(request, words) if status < 400 else [],
            "alternates": self._alternates(request) if public else [],
            **(context or {}),
        }
        body = self._environments[words.language].get_template(name).render(values)
        merged = {**page_headers(), **(headers or {})}
        if words.negotiated:  # a cache must not give this answer to a reader of another language
            merged["Vary"] = ", ".join(filter(None, (merged.get("Vary"), "Accept-Language")))
        response = HTMLResponse(body, status_code=status, headers=merged)
        if csrf.new:
            self.cookies.set_csrf(response, csrf.token)
        return response

    def _switcher(self, request: Request, words: Words) -> list[tuple[str, str, str, bool]]:
        """The language switcher: (tag, name, link, current) per offered language. Only on a page a GET shows
        (the answer to a form is not at its address), not on an error page (its address shows nothing), and only
        when there is a choice. Each link is this very address, its path (and signed token) and query kept, with
        ``lang`` set."""
        if request.method not in ("GET", "HEAD") or len(self.languages.offered) < 2:
            return []
        here = _relative(request)
        return [(tag, label, with_language(here, tag), tag == words.language) for tag, label in self.languages.names()]

    def _alternates(self, request: Request) -> list[tuple[str, str]]:
        """``hreflang`` alternates of a public page: its absolute address in each language, and ``x-default``
        (no ``lang``: the browser's language decides)."""
        if len(self.languages.offered) < 2:
            return []
        base = self.settings.site.base_url.rstrip("/")
        query = [(key, value) for key, value in request.query_params.multi_items() if key != PARAMETER]
        plain = _own_path(request.url.path) + (f"?{urlencode(query)}" if query else "")
        pairs = [(tag, base + with_language(plain, tag)) for tag in self.languages.offered]
        return [*pairs, ("x-default", base + plain)]

    def message(
        self,
        request: Request,
        title: str,
        paragraphs: list[str],
        *,
        status: int = 200,
        links: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        editor: SignedIn | None = None,
    ) -> HTMLResponse:
        """A page that only says something: a title, a few paragraphs of plain text and links onwards (worded by
        the caller in the request's language, ``words``)."""
        context = {"title": title, "paragraphs": paragraphs, "links": links or []}
        return self.render(request, "message.html", context, status=status, headers=headers, editor=editor)

    async def form(self, request: Request) -> Form:
        """The request's form; PageError saying why it was refused (encoding, size, sent in part)."""
        try:
            return await read_form(request)
        except FormRefused as error:
            words = self.words_of(request)
            raise PageError(
                error.status, words.gettext("This form was not sent right"), [error.worded(words)]
            ) from error

    def check_csrf(
        self, request: Request, form: Form, back: tuple[str, str], *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Refuse (PageError 403, asking to send it again, with a link ``back`` (path, label) to the form) a form
        without this browser's CSRF token. ConfigError when no signing key is configured."""
        if not self.cookies.csrf_ok(request, form):
            words = self.words_of(request)
            raise PageError(
                403,
                words.gettext("Please try again"),
                [words.gettext(FORM_EXPIRED)],
                links=[back],
                headers=headers or {},
            )

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


def _relative(request: Request) -> str:
    """The request's own address without scheme and host: its path and query. A path that starts with ``//`` or
    ``/\\`` (which a browser reads as another host's address) is given one leading slash: a link made from it stays
    on this site."""
    query = request.url.query
    return _own_path(request.url.path) + (f"?{query}" if query else "")


def _own_path(path: str) -> str:
    return "/" + path.lstrip("/\\")
