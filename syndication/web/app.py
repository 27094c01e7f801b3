"""The web app factory: one FastAPI app assembled from each area's router, and ``serve`` to run it under uvicorn."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from syndication.app.notices import NoticeWorker
from syndication.app.service import Service
from syndication.config import Settings
from syndication.core.team import SignedIn
from syndication.errors import SyndicationError
from syndication.runtime.logs import REQUEST_ID, configure_logging
from syndication.web import feeds, home, unsubscribe
from syndication.web.access import Gate
from syndication.web.api import PREFIX as API_PREFIX
from syndication.web.api import api_app
from syndication.web.archive import ArchivePages
from syndication.web.editor import EditorPages
from syndication.web.errors import MAPPED_ERRORS, PageError, page_of
from syndication.web.health import Health, RequestMiddleware
from syndication.web.integrations import IntegrationPages
from syndication.web.limits import limited_protocol
from syndication.web.sessions import SESSION_PATH, Cookies
from syndication.web.subscribe import SubscriberPages
from syndication.web.team import TeamPages
from syndication.web.templating import Pages

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, wake_sender: Callable[[], None] | None = None, *, drain_notices_at_start: bool = False
) -> FastAPI:
    """The whole web app for ``settings``: the feeds under ``/feeds/``, the subscriber's pages (subscribe, confirm,
    preferences, unsubscribe), the archive, the editor's pages under ``/editor/``, and the home page ``/``, which
    leads to them. Every address that takes GET takes HEAD too (Starlette's routes add it). ``wake_sender``, given
    by ``syndication run``, is called when an editor approves or resumes an edition so that the process's own
    scheduled sender sends it, instead of a second sender started by the web app.
    ``/healthz``, ``/readyz`` and ``/metrics`` are the operators' (``web.health``); every request gets an id
    (``X-Request-ID``) and is counted by route.

    The app sends the notices its pages queue (confirmations, rejoin links, preference changes) from one thread of
    its own (``app.notices.NoticeWorker``), started and stopped with it: woken when a page queues one, and looking
    every ``[web] notices_poll_seconds`` once the store is open (at once with ``drain_notices_at_start``, as
    ``serve`` does: notices queued before a restart go out without waiting for a visitor)."""
    # No generated docs for the pages: they are for readers and editors. The JSON API under /api/v1 is an app of
    # its own (web.api), with its own OpenAPI document and errors.
    store = _Store(settings)
    notices = NoticeWorker(
        store.service, store.is_open, poll_seconds=settings.web.notices_poll_seconds, eager=drain_notices_at_start
    )
    pages = Pages(settings, Cookies(settings, store.service))
    gate = Gate(pages)
    editor = EditorPages(store.service, pages, gate, wake_sender)
    health = Health(settings)
    feed_files = feeds.FeedFiles(settings, store.service)
    # The notices' drain and the senders started by an editor finish the messages in hand before the store closes.
    on_shutdown = [notices.stop, editor.deliveries.close, feed_files.close, store.close, health.close]
    app = FastAPI(
        title=settings.site.title, docs_url=None, redoc_url=None, openapi_url=None, on_startup=[notices.start],
        on_shutdown=on_shutdown,
    )  # fmt: skip
    # Starlette's own slash redirect writes an absolute Location from the request's Host header; ours is relative.
    app.router.redirect_slashes = False
    app.add_middleware(RequestMiddleware)
    if settings.web.trusted_proxies:
        # Outermost, so that every other part sees the visitor's address and scheme: the per-client limits, the
        # logs, /metrics' allow list. Only the configured proxies are believed (servers run with uvicorn's own
        # proxy handling off: server_config).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.web.trusted_proxies))
    app.add_exception_handler(Exception, _internal_error)
    app.add_exception_handler(StarletteHTTPException, _http_error(pages))
    for error_type in (PageError, *MAPPED_ERRORS):
        app.add_exception_handler(error_type, _page_error(pages))
    app.mount(API_PREFIX, api_app(store.service, settings, wake_sender, wake_notices=notices.wake))
    app.router.routes.extend(health.routes())
    app.router.routes.extend(pages.asset_routes())
    app.router.routes.extend(ArchivePages(store.service, pages).routes())  # before /feeds/{path}: editions.atom
    app.router.routes.extend(feeds.router(feed_files).routes)  # plain routes: each names its path template
    app.router.routes.extend(unsubscribe.routes(store.service, pages))
    app.router.routes.extend(SubscriberPages(store.service, pages, notices.wake).routes())
    app.router.routes.extend(editor.routes())
    app.router.routes.extend(IntegrationPages(store.service, pages, gate).routes())
    app.router.routes.extend(TeamPages(store.service, pages, gate).routes())
    app.router.routes.extend(home.routes(pages))
    app.state.editor_gate = gate  # its rules: every editor route and what it needs (the role tests walk them)
    return app


class _Store:
    """The store, opened on the first request that needs it (serving feeds does not) and closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._service: Service | None = None
        self._lock = threading.Lock()

    def service(self) -> Service:
        with self._lock:
            if self._service is None:
                self._service = Service.open(self._settings)
            return self._service

    def is_open(self) -> bool:
        """Whether a request opened the store already."""
        return self._service is not None

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None


def server_config(
    app: Any, settings: Settings, host: str = "127.0.0.1", port: int = 8000, **options: Any
) -> uvicorn.Config:
    """How every server of the app runs (``serve``, ``BackgroundServer``, the tests of the limits): uvicorn with
    httptools, which parses HTTP in C (feed readers poll all day, mostly for 304s), under the ``[web]`` limits.

    A request head over ``max_header_bytes`` is answered 431 (``max_request_line_bytes`` of target: 414) and its
    connection closed, by the protocol ``web.limits.limited_protocol`` makes (httptools has no limit of its own);
    bodies are read by the pages up to their own limit (``web.forms``). Past ``max_concurrency`` connections or
    requests at once the answer is 503. A per-request access log line is left to the reverse proxy in front,
    which has it anyway. ``options`` go to ``uvicorn.Config`` as they are.
    """
    web = settings.web
    protocol = limited_protocol(web.max_header_bytes, web.max_request_line_bytes, web.header_timeout_seconds)
    defaults: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": protocol,
        "loop": "uvloop",
        "server_header": False,
        "access_log": False,
        "limit_concurrency": web.max_concurrency,
        "h11_max_incomplete_event_size": web.max_header_bytes,  # h11's own limit, should h11 ever be chosen
        "timeout_graceful_shutdown": 10,
        "proxy_headers": False,  # the app believes forwarded headers from [web] trusted_proxies only
    }
    return uvicorn.Config(app, **{**defaults, **options})


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, made before anything else starts, so that a port in use (or
    an address not of this machine) stops the command at once with one line naming it: SyndicationError (exit 1).
    Uvicorn would otherwise report it in its log after start-up and exit with a status of its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else str(error)  # not create_server's repeat of the address
        raise SyndicationError(f"cannot listen on {host}:{port}: {why}") from None


def serve(settings: Settings, sock: socket.socket) -> None:
    """Run the app on the listening socket ``sock`` (``listening_socket``) until interrupted (``syndication
    serve``), logging as ``[logging]`` says."""
    configure_logging(settings.logging)
    app = create_app(settings, drain_notices_at_start=True)
    host, port = sock.getsockname()[:2]
    uvicorn.Server(server_config(app, settings, host, port, log_config=None)).run(sockets=[sock])


def _http_error(pages: Pages) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Unknown paths and methods answered with a page of the site rather than a JSON body."""

    async def handle(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers or {})
        if error.status_code == 404 and (other := _other_slash(request)) is not None:
            query = request.url.query
            return RedirectResponse(other + (f"?{query}" if query else ""), status_code=307)
        words = pages.words_of(request)
        pages_for = {
            404: (words.gettext("Page not found"), words.gettext("There is no page at this address.")),
            405: (words.gettext("Not allowed here"), words.gettext("This address does not take this kind of request.")),
        }
        if error.status_code not in pages_for:
            return PlainTextResponse(f"{error.detail}\n", status_code=error.status_code, headers=headers)
        title, text = pages_for[error.status_code]
        return pages.message(
            request,
            title,
            [text],
            status=error.status_code,
            headers=headers,
            links=[(words.url("/subscribe"), words.gettext("Subscribe"))],
        )

    return handle


def _page_error(pages: Pages) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The one answer to a handler's PageError and to the app-layer errors that have a page (``page_of``): the
    site's message page, in the language chosen for the request, with the editor's navigation on the editor's
    pages."""

    async def handle(request: Request, error: Exception) -> Response:
        page = page_of(error, request.method, request.url.path, pages.words_of(request))
        return pages.message(
            request,
            page.title,
            list(page.paragraphs),
            status=page.status,
            links=list(page.links),
            headers=page.headers,
            editor=await _editor_of(pages, request),
        )

    return handle


async def _editor_of(pages: Pages, request: Request) -> SignedIn | None:
    """The signed-in editor on an editor's page (the session cookie goes nowhere else), or None."""
    if not request.url.path.startswith(SESSION_PATH + "/"):
        return None
    try:
        return await pages.cookies.editor(request)
    except SyndicationError:  # the page says what went wrong; the store failing too must not hide it
        return None


def _other_slash(request: Request) -> str | None:
    """The path with its trailing slash added or taken off, when no route takes the path as it is and one takes
    that (a route that takes the path and answered 404 itself is left alone: no redirect loops)."""
    path = request.scope["path"]
    if path == "/" or path.startswith("//"):  # "//host/..." as a Location would leave the site
        return None
    routes = request.app.router.routes
    if any(route.matches(request.scope)[0] != Match.NONE for route in routes):
        return None
    other = path[:-1] if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": other}
    return other if any(route.matches(scope)[0] == Match.FULL for route in routes) else None


async def _internal_error(request: Request, error: Exception) -> Response:
    # The traceback goes to the log, never to the client: it would show paths, settings and code.
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    request_id = REQUEST_ID.get()  # this handler answers outside the middleware that echoes it
    headers = {"X-Request-ID": request_id} if request_id else None
    return PlainTextResponse("Internal server error\n", status_code=500, headers=headers)


class BackgroundServer:
    """The web app under uvicorn in a thread of its own, beside the scheduler (``syndication run``).

    uvicorn installs no signal handlers off the main thread: the caller owns SIGTERM and calls ``stop``.
    ``sock``: a listening socket bound already (tests and benchmarks bind port 0), in place of ``host:port``.
    """

    def __init__(
        self,
        settings: Settings,
        host: str,
        port: int,
        wake_sender: Callable[[], None] | None = None,
        *,
        sock: socket.socket | None = None,
        app: Any = None,
    ) -> None:
        app = app if app is not None else create_app(settings, wake_sender, drain_notices_at_start=True)
        self._server = uvicorn.Server(server_config(app, settings, host, port, log_config=None))
        sockets = [sock] if sock is not None else None
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets}, name="web", daemon=True)

    @property
    def started(self) -> bool:
        """Whether uvicorn accepts connections."""
        return bool(self._server.started)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the requests in flight and stop."""
        self._server.should_exit = True
        self._thread.join(timeout)
