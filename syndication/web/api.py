"""The JSON API under ``/api/v1``: a FastAPI app of its own, mounted by ``web.app``, so that everything under the
prefix answers JSON, errors included (RFC 9457 problem details, rendered in one place: ``_problem``), and never
the site's pages.

Every request carries ``Authorization: Bearer synd_<id>_<secret>`` (``syndication tokens create``); a token has
scopes (``read``, ``posts``, ``subscribers``, ``send``: ``core.api_tokens.SCOPES``) and a request rate
(``[api] requests_per_minute``). Lists are paged by an opaque ``cursor`` (``next`` of the page before). Creates
honour ``Idempotency-Key``. The OpenAPI document is served at ``/api/v1/openapi.json`` and listed, operation by
operation, at ``/api/v1/docs`` (a page of our own: Swagger UI and ReDoc load their code from a CDN).
"""

import html
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from syndication import __version__
from syndication.app import api
from syndication.app.editions import EditionReport, NoSuchEdition, change_edition, edition_report
from syndication.app.gathering import theme_post_counts
from syndication.app.service import Service
from syndication.app.status import status_report
from syndication.app.subscribers import SubscriberError, add_subscriber
from syndication.config import Settings
from syndication.core.api_tokens import ApiToken
from syndication.core.editions import EditionAction, EditionRefused
from syndication.core.models import Post, Subscriber
from syndication.errors import ConfigError, StoreError, SyndicationError
from syndication.web.limits import RateLimit

log = logging.getLogger(__name__)

PREFIX: Final = "/api/v1"
PROBLEM_TYPE: Final = "application/problem+json"
_TITLES: Final = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
# Every problem's stable code, with what it means (the docs page lists them; each problem's type links there).
CODES: Final = {
    "unauthenticated": "No token, or one that is malformed, unknown or revoked (401).",
    "insufficient_scope": "The token lacks the scope this operation needs (403).",
    "rate_limited": "Too many requests with this token: wait Retry-After seconds (429).",
    "invalid_input": "A parameter or a field of the body is not valid; `field` names it (422).",
    "not_found": "Nothing has this id (404).",
    "no_such_route": "No operation at this address (404).",
    "method_not_allowed": "The address does not take this method (405).",
    "idempotency_key_reused": "The Idempotency-Key was used with another request within 24 hours (409).",
    "subscriber_refused": "The address cannot be added as asked: suppressed, or a subscription that ended (409).",
    "edition_refused": "The edition's status does not allow this action (409).",
    "refused": "The service refused the request (400).",
    "unavailable": "The service cannot answer now (503).",
    "internal_error": "Something failed on our side; it is logged (500).",
}
MAX_KEY: Final = 200


class ApiProblem(Exception):
    """An answer as problem details: its status, stable code, detail, the field at fault and extra headers."""

    def __init__(
        self, status: int, code: str, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, code, detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.headers = headers or {}


# --- Models: what the OpenAPI document describes ------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details, with the stable ``code`` clients branch on and the ``field`` at fault."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


class ImageOut(BaseModel):
    url: str
    alt: str


class PostOut(BaseModel):
    """A post, with the JSON Lines field names (``posts list --json``) and its id."""

    id: int
    guid: str
    title: str
    url: str
    summary: str
    content_html: str
    authors: list[str]
    published: datetime
    updated: datetime
    themes: list[str]
    regions: list[str]
    language: str
    image: ImageOut | None


class PostPage(BaseModel):
    items: list[PostOut]
    next: str | None = Field(description="The cursor of the next page; null on the last.")


class PostIn(BaseModel):
    """One post as a JSON Lines record: validated as `syndication import` validates a line."""

    model_config = ConfigDict(extra="allow")

    guid: str | None = None
    title: str | None = None
    url: str | None = None
    summary: str | None = None
    content_html: str | None = None
    authors: list[str] | None = None
    published: str | None = None
    updated: str | None = None
    themes: list[str] | None = None
    regions: list[str] | None = None
    language: str | None = None
    image: dict[str, Any] | None = None


class PostSaved(BaseModel):
    action: str = Field(description="created, updated or unchanged (an update needs a newer `updated`)")
    post: PostOut
    warnings: list[str]


class ThemeOut(BaseModel):
    slug: str
    name: str
    description: str
    posts: int


class RegionOut(BaseModel):
    slug: str
    name: str


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    language: str
    themes: list[str] | None = Field(description="null: every theme")
    cadence: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next: str | None


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str
    name: str | None = None
    themes: list[str] | None = Field(None, description="theme slugs or aliases; null or empty: every theme")
    cadence: str | None = None
    language: str | None = None
    confirmed: bool = Field(
        False, description="their consent is confirmed already: active at once, no confirmation email"
    )


class SubscriberAdded(BaseModel):
    action: str = Field(description="added, resubscribed, confirmed, reactivated or exists")
    subscriber: SubscriberOut
    confirmation_sent: bool


class EditionOut(BaseModel):
    id: int
    cadence: str
    since: datetime
    until: datetime
    status: str
    subject: str
    intro: str
    created_at: datetime
    reason: str
    deliveries: dict[str, int] = Field(description="deliveries per status")
    reasons: dict[str, dict[str, int]] = Field(description="status → why its deliveries did not go (yet) → how many")
    actions: list[str] = Field(description="what may be done to it now")


class EditionPage(BaseModel):
    items: list[EditionOut]
    next: str | None


class EditionChanged(BaseModel):
    previous_status: str
    edition: EditionOut


class JobOut(BaseModel):
    job_id: str
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_ok: bool | None
    last_summary: str
    next_run: datetime | None


class CadenceOut(BaseModel):
    cadence: str
    last_edition_id: int | None
    last_status: str | None
    deliveries: dict[str, int]
    next_due: datetime | None


class StatusOut(BaseModel):
    queue_depth: int
    jobs: list[JobOut]
    editions: list[CadenceOut]


def _post(post_id: int, post: Post) -> PostOut:
    image = ImageOut(url=post.image.url, alt=post.image.alt) if post.image else None
    return PostOut(
        id=post_id,
        guid=post.guid,
        title=post.title,
        url=post.url,
        summary=post.summary,
        content_html=post.content_html,
        authors=[a.name for a in post.authors],
        published=post.published,
        updated=post.updated,
        themes=list(post.themes),
        regions=list(post.regions),
        language=post.language,
        image=image,
    )


def _subscriber(s: Subscriber) -> SubscriberOut:
    return SubscriberOut(
        id=s.id,
        email=s.email,
        name=s.name,
        language=s.language,
        themes=None if s.themes is None else list(s.themes),
        cadence=s.cadence,
        status=s.status,
        created_at=s.created_at,
        confirmed_at=s.confirmed_at,
    )


def _edition(report: EditionReport) -> EditionOut:
    e = report.edition
    return EditionOut(
        id=e.id,
        cadence=e.cadence,
        since=e.since,
        until=e.until,
        status=str(e.status),
        subject=e.subject,
        intro=e.intro,
        created_at=e.created_at,
        reason=e.reason,
        deliveries=dict(report.deliveries),
        reasons=report.reasons,
        actions=[str(action) for action in report.actions],
    )


# --- Problems -------------------------------------------------------------------------------------------------


def _problem_of(error: Exception) -> ApiProblem:
    """The problem answering ``error``: the one mapping from errors to statuses and codes."""
    if isinstance(error, ApiProblem):
        return error
    if isinstance(error, api.Unauthenticated):
        return ApiProblem(401, error.code, str(error), headers={"WWW-Authenticate": 'Bearer realm="api"'})
    if isinstance(error, api.BadInput):
        return ApiProblem(422, error.code, str(error), field=error.field)
    if isinstance(error, api.NotFound):
        return ApiProblem(404, error.code, str(error))
    if isinstance(error, api.IdempotencyConflict | api.SubscriberRefused):
        return ApiProblem(409, error.code, str(error), field=error.field)
    if isinstance(error, NoSuchEdition):
        return ApiProblem(404, "not_found", str(error))
    if isinstance(error, EditionRefused):
        return ApiProblem(409, "edition_refused", str(error))
    if isinstance(error, SubscriberError):
        return ApiProblem(409, "subscriber_refused", str(error))
    if isinstance(error, RequestValidationError):
        errors = error.errors()
        first = errors[0] if errors else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        name = ".".join(where) or None
        detail = f"{name}: {first.get('msg', 'not valid')}" if name else str(first.get("msg", "not valid"))
        return ApiProblem(422, "invalid_input", detail, field=name)
    if isinstance(error, StarletteHTTPException):
        if error.status_code == 404:
            return ApiProblem(404, "no_such_route", "there is no operation at this address")
        if error.status_code == 405:
            return ApiProblem(405, "method_not_allowed", "this address does not take this method")
        return ApiProblem(error.status_code, "refused", str(error.detail))
    if isinstance(error, ConfigError | StoreError):
        log.error("API request refused: %s", error)
        return ApiProblem(503, "unavailable", "the service cannot answer now", headers={"Retry-After": "60"})
    if isinstance(error, SyndicationError):
        return ApiProblem(400, "refused", str(error))
    return ApiProblem(500, "internal_error", "something failed on our side; it is logged")


async def _problem(request: Request, error: Exception) -> Response:
    """The one place an API error becomes an answer: problem details, never a page or a traceback."""
    problem = _problem_of(error)
    if problem.status == 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    body = {
        "type": f"{PREFIX}/docs#{problem.code}",
        "title": _TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if problem.field is not None:
        body["field"] = problem.field
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_TYPE)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem, "description": _TITLES[status]} for status in statuses}


# --- The app ----------------------------------------------------------------------------------------------------


def api_app(
    service: Callable[[], Service], settings: Settings, wake_sender: Callable[[], None] | None = None
) -> FastAPI:
    """The API, to mount at PREFIX: ``service`` opens the store on first use."""
    app = FastAPI(
        title=f"{settings.site.title} API", version=__version__, openapi_url=None, docs_url=None, redoc_url=None
    )
    for error_type in (Exception, StarletteHTTPException, RequestValidationError, SyndicationError, ApiProblem):
        app.add_exception_handler(error_type, _problem)
    limits = RateLimit(settings.api.requests_per_minute, 60.0)
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer synd_<id>_<secret>`")

    def caller(scope: str) -> Any:
        def authenticated(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> ApiToken:
            token = api.authenticate(service(), credentials.credentials if credentials else None)
            key = str(token.id)
            if not limits.allow(key):
                wait = str(max(1, limits.retry_after(key)))
                raise ApiProblem(
                    429, "rate_limited", "too many requests with this token", headers={"Retry-After": wait}
                )
            if scope not in token.scopes:
                raise ApiProblem(403, "insufficient_scope", f"this operation needs a token with the {scope} scope")
            return token

        return Depends(authenticated)

    def once(
        token: ApiToken, key: str | None, operation: str, body: Any, run: Callable[[], tuple[int, BaseModel]]
    ) -> Response:
        """Run a create, or give the answer kept for ``key`` (Idempotency-Key) if it was run already."""
        if key is None:
            status, model = run()
            return JSONResponse(model.model_dump(mode="json"), status_code=status)
        if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
            raise ApiProblem(
                422,
                "invalid_input",
                f"an Idempotency-Key is 1 to {MAX_KEY} printable characters",
                field="Idempotency-Key",
            )
        fingerprint = api.request_hash(operation, body)
        kept = api.kept_answer(service(), token, key, fingerprint)
        if kept is not None:
            return Response(
                kept[1], status_code=kept[0], media_type="application/json", headers={"Idempotent-Replayed": "true"}
            )
        status, model = run()
        text = json.dumps(model.model_dump(mode="json"), ensure_ascii=False)
        api.keep_answer(service(), token, key, fingerprint, status, text)
        return Response(text, status_code=status, media_type="application/json")

    reading = caller("read")
    Key = Annotated[
        str | None, Header(alias="Idempotency-Key", description="the same key retried gives the same answer (24 h)")
    ]
    Limit = Annotated[int, Query(ge=1, le=api.MAX_PAGE, description="at most this many (1 to 100)")]
    Cursor = Annotated[str | None, Query(description="`next` of the page before")]

    @app.get(
        "/posts",
        response_model=PostPage,
        summary="Published posts, newest first (scope read)",
        responses=_problems(401, 403, 422, 429),
    )
    def list_posts(
        token: Annotated[ApiToken, reading],
        theme: str | None = None,
        region: str | None = None,
        author: Annotated[str | None, Query(description="an author's slug")] = None,
        language: str | None = None,
        since: Annotated[
            datetime | None, Query(description="published after this time (ISO 8601; UTC without offset)")
        ] = None,
        until: Annotated[datetime | None, Query(description="published at or before this time")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> PostPage:
        filters = api.PostFilters(theme, region, author, language, _utc(since), _utc(until))
        page = api.post_page(service(), filters, cursor=cursor, limit=limit)
        return PostPage(items=[_post(i, p) for i, p in page.items], next=page.next)

    @app.get(
        "/posts/{reference:path}",
        response_model=PostOut,
        summary="One post, by guid or id (scope read)",
        responses=_problems(401, 403, 404, 429),
    )
    def get_post(reference: str, token: Annotated[ApiToken, reading]) -> PostOut:
        return _post(*api.find_post(service(), reference))

    @app.post(
        "/posts",
        response_model=PostSaved,
        status_code=201,
        summary="Create or update one post, validated as an import line (scope posts)",
        responses={
            200: {"model": PostSaved, "description": "updated or unchanged"},
            **_problems(401, 403, 409, 422, 429),
        },
    )
    def put_post(record: PostIn, token: Annotated[ApiToken, caller("posts")], idempotency_key: Key = None) -> Response:
        fields = record.model_dump(exclude_unset=True)

        def run() -> tuple[int, BaseModel]:
            outcome = api.put_post(service(), fields)
            saved = PostSaved(
                action=outcome.action, post=_post(outcome.post_id, outcome.post), warnings=outcome.warnings
            )
            return (201 if outcome.action == "created" else 200), saved

        return once(token, idempotency_key, "POST /posts", fields, run)

    @app.get(
        "/themes",
        response_model=list[ThemeOut],
        summary="The themes with their post counts (scope read)",
        responses=_problems(401, 403, 429),
    )
    def list_themes(token: Annotated[ApiToken, reading]) -> list[ThemeOut]:
        counts = theme_post_counts(service())
        return [
            ThemeOut(slug=t.slug, name=t.name, description=t.description, posts=counts.get(t.slug, 0))
            for t in settings.themes
        ]

    @app.get(
        "/regions",
        response_model=list[RegionOut],
        summary="The configured regions (scope read)",
        responses=_problems(401, 403, 429),
    )
    def list_regions(token: Annotated[ApiToken, reading]) -> list[RegionOut]:
        return [RegionOut(slug=r.slug, name=r.name) for r in settings.regions]

    @app.get(
        "/status",
        response_model=StatusOut,
        summary="Jobs, queue and each cadence's last edition (scope read)",
        responses=_problems(401, 403, 429),
    )
    def get_status(token: Annotated[ApiToken, reading]) -> StatusOut:
        report = status_report(service())
        jobs = [
            JobOut(
                job_id=j.job_id,
                last_started_at=j.last.started_at if j.last else None,
                last_finished_at=j.last.finished_at if j.last else None,
                last_ok=j.last.ok if j.last else None,
                last_summary=j.last.summary if j.last else "",
                next_run=j.next_run,
            )
            for j in report.jobs
        ]
        editions = [
            CadenceOut(
                cadence=c.cadence,
                last_edition_id=c.last.id if c.last else None,
                last_status=str(c.last.status) if c.last else None,
                deliveries=dict(c.deliveries),
                next_due=c.next_due,
            )
            for c in report.editions
        ]
        return StatusOut(queue_depth=report.queue_depth, jobs=jobs, editions=editions)

    @app.get(
        "/editions",
        response_model=EditionPage,
        summary="Editions, newest first (scope read)",
        responses=_problems(401, 403, 422, 429),
    )
    def list_editions(token: Annotated[ApiToken, reading], limit: Limit = 50, cursor: Cursor = None) -> EditionPage:
        page = api.edition_page(service(), cursor=cursor, limit=limit)
        return EditionPage(items=[_edition(r) for r in page.items], next=page.next)

    @app.get(
        "/editions/{edition_id}",
        response_model=EditionOut,
        summary="One edition with its delivery counts and reasons (scope read)",
        responses=_problems(401, 403, 404, 429),
    )
    def get_edition(edition_id: int, token: Annotated[ApiToken, reading]) -> EditionOut:
        return _edition(edition_report(service(), edition_id))

    def edition_action(action: EditionAction) -> None:
        def act(edition_id: int, token: Annotated[ApiToken, caller("send")]) -> EditionChanged:
            before, _after = change_edition(service(), edition_id, action, actor=token.actor)
            if action in (EditionAction.APPROVE, EditionAction.RESUME) and wake_sender is not None:
                wake_sender()
            return EditionChanged(
                previous_status=str(before.status), edition=_edition(edition_report(service(), edition_id))
            )

        app.post(
            f"/editions/{{edition_id}}/{action.value}",
            response_model=EditionChanged,
            name=f"{action.value}_edition",
            summary=f"{action.value.capitalize()} an edition (scope send)",
            responses=_problems(401, 403, 404, 409, 429),
        )(act)

    for action in EditionAction:
        edition_action(action)

    @app.get(
        "/subscribers",
        response_model=SubscriberPage,
        summary="Subscribers in id order (scope subscribers)",
        responses=_problems(401, 403, 422, 429),
    )
    def list_subscribers(
        token: Annotated[ApiToken, caller("subscribers")],
        status: Annotated[str | None, Query(description="pending, active, unsubscribed, bounced or complained")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> SubscriberPage:
        page = api.subscriber_page(service(), status=status, cursor=cursor, limit=limit)
        return SubscriberPage(items=[_subscriber(s) for s in page.items], next=page.next)

    @app.post(
        "/subscribers",
        response_model=SubscriberAdded,
        status_code=201,
        summary="Add a subscriber: pending with a confirmation email, or active when `confirmed` (scope subscribers)",
        responses={
            200: {"model": SubscriberAdded, "description": "the address was known"},
            **_problems(401, 403, 409, 422, 429),
        },
    )
    def add(
        body: SubscriberIn, token: Annotated[ApiToken, caller("subscribers")], idempotency_key: Key = None
    ) -> Response:
        fields = body.model_dump()

        def run() -> tuple[int, BaseModel]:
            current = service()
            api.check_subscriber_input(current, body.email, body.themes, body.cadence, body.language)
            outcome = add_subscriber(
                current,
                body.email,
                name=body.name,
                themes=body.themes,
                cadence=body.cadence,
                language=body.language,
                confirmed=body.confirmed,
                consent_method="api",
                consent_source=f"API token {token.name}",
                actor=token.actor,
            )
            added = SubscriberAdded(
                action=outcome.action,
                subscriber=_subscriber(outcome.subscriber),
                confirmation_sent=outcome.confirmation_sent,
            )
            return (200 if outcome.action == "exists" else 201), added

        return once(token, idempotency_key, "POST /subscribers", fields, run)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document() -> JSONResponse:
        return JSONResponse(document(app))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(document(app)))

    return app


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def document(app: FastAPI) -> dict[str, Any]:
    """The API's OpenAPI document, with the full paths (``/api/v1/...``) and errors as problem details; made once
    per app."""
    made: dict[str, Any] | None = getattr(app.state, "document", None)
    if made is None:
        made = app.state.document = _document_of(app)
    return made


def _document_of(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=__doc__)
    paths: dict[str, Any] = {}
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    response["content"] = {PROBLEM_TYPE: content["application/json"]}
        paths[PREFIX + path] = operations
    doc["paths"] = paths
    return doc


def docs_page(doc: dict[str, Any]) -> str:
    """A readable page of the document: each operation, its parameters, and the problem codes."""
    e = html.escape
    rows = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            params = ", ".join(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")
            rows.append(
                f"<tr><td><code>{e(method.upper())}</code></td><td><code>{e(path)}</code></td>"
                f"<td>{e(operation.get('summary', ''))}</td><td>{e(params)}</td></tr>"
            )
    codes = "".join(f'<dt id="{e(code)}"><code>{e(code)}</code></dt><dd>{e(text)}</dd>' for code, text in CODES.items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>' + e(doc["info"]["title"]) + "</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}"
        "td{padding:.25rem .5rem;vertical-align:top}th{text-align:left}</style></head><body>"
        f"<h1>{e(doc['info']['title'])} {e(doc['info']['version'])}</h1>"
        f"<p>Every request sends <code>Authorization: Bearer synd_…</code>. The whole description: "
        f'<a href="{PREFIX}/openapi.json">openapi.json</a>.</p>'
        "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>query</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table><h2>Problem codes</h2><dl>"
        + codes
        + "</dl></body></html>"
    )
