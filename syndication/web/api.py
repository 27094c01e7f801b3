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

from fastapi import Body, Depends, FastAPI, Header, Query, Request, Security
from fastapi.encoders import jsonable_encoder
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
from syndication.app.subscribers import (
    SubscriberError,
    add_subscriber,
    normalise_email,
    remove_subscriber,
    unsubscribe,
    update_preferences,
)
from syndication.config import Settings
from syndication.core.api_tokens import ApiToken
from syndication.core.editions import EditionAction, EditionRefused
from syndication.core.models import Post, Subscriber
from syndication.errors import ConfigError, DeliveryError, StoreError, SyndicationError
from syndication.web.limits import site_limit

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
    413: "Content too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
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
    "subscriber_refused": "The subscriber cannot be added or changed as asked: suppressed, or a subscription that"
    " ended (409).",
    "edition_refused": "The edition's status does not allow this action (409).",
    "nothing_to_send": "The edition holds nothing for the readers asked for: no test email to send (409).",
    "batch_too_large": f"More than {api.MAX_BATCH} items in one import: send them in several (413).",
    "not_sent": "The mail relay refused the test email; `detail` gives its reply (502).",
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


class ImportedPost(BaseModel):
    index: int = Field(description="the item's place in the batch, from 0")
    action: str = Field(description="created, updated, unchanged or refused")
    guid: str | None = None
    id: int | None = Field(None, description="the post's id (null when refused)")
    reason: str | None = Field(None, description="why it was refused")
    field: str | None = Field(None, description="the field at fault, when the reason names one")
    warnings: list[str]


class PostsImported(BaseModel):
    counts: dict[str, int] = Field(description="items per action: created, updated, unchanged, refused")
    items: list[ImportedPost] = Field(description="one per item of the batch, in its order")


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
    reads: list[str] = Field(description="languages of posts they read besides their emails' (tags)")
    language_choice: str | None = Field(
        description="what their digests do with posts in other languages: all, first or only; null: the site's"
    )


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
    confirmation_queued: bool = Field(
        description="a confirmation email is queued for them (sent by the service's notices queue, not within the"
        " request)"
    )


class SubscriberChange(BaseModel):
    """The preferences to change; a field left out is kept. ``themes``: null or empty is every theme."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    themes: list[str] | None = Field(None, description="theme slugs or aliases; null or empty: every theme")
    cadence: str | None = None
    language: str | None = Field(None, description="the language of their emails (one of [digest] languages)")
    reads: list[str] | None = Field(None, description="languages of posts they read besides their emails' (tags)")
    language_choice: str | None = Field(None, description="all, first, only, or default (the site's)")


class SubscriberChanged(BaseModel):
    changed: bool = Field(description="false: they had these preferences already")
    subscriber: SubscriberOut


class SubscriberLeft(BaseModel):
    previous_status: str
    subscriber: SubscriberOut


class SubscriberErased(BaseModel):
    outcome: str = Field(
        description="removed (erased and suppressed), suppressed (not subscribed: suppressed all the same) or"
        " already removed"
    )


class SubscribersIn(BaseModel):
    """A batch of subscribers, as `subscribers import` reads a CSV file, with its options."""

    model_config = ConfigDict(extra="forbid")

    subscribers: list[Any] = Field(
        description="records with the CSV's columns: email (required), name, themes, cadence, language, reads,"
        " language_choice, status, consent_at, consent_method, consent_source (themes and reads as lists or"
        " text); what GET /subscribers/export gives imports as it is"
    )
    confirmed: bool = Field(False, description="every record's consent is confirmed: active at once, no emails")
    update: bool = Field(False, description="change the preferences of existing subscribers to the records'")
    reactivate: bool = Field(
        False, description="with confirmed and reason: make unsubscribed, bounced or complained ones active again"
    )
    reason: str | None = Field(None, description="with reactivate: why their renewed consent is known (recorded)")


class ImportedSubscriber(BaseModel):
    index: int = Field(description="the item's place in the batch, from 0")
    action: str = Field(description="added, confirmed, reactivated, updated, unchanged or refused")
    email: str | None = None
    id: int | None = Field(None, description="the subscriber's id (null when refused)")
    reason: str | None = Field(None, description="why it was refused")


class SubscribersImported(BaseModel):
    counts: dict[str, int] = Field(description="items per outcome: added, activated, updated, unchanged, refused")
    confirmations_queued: int
    items: list[ImportedSubscriber] = Field(description="one per item of the batch, in its order")


class BounceOut(BaseModel):
    """A bounce counted against a subscriber, as `bounces list --subscriber ... --json` gives them."""

    id: int
    at: datetime
    email: str | None = Field(description="the subscriber's address; null once they were erased")
    subscriber_id: int | None
    delivery_id: int | None
    edition_id: int | None
    source: str
    fault: str
    status: str
    diagnostic: str
    score: float


class BouncePage(BaseModel):
    items: list[BounceOut]
    next: str | None


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


class EmailOut(BaseModel):
    subject: str
    preheader: str
    html: str
    text: str


class EditionPreview(BaseModel):
    edition_id: int
    themes: list[str] | None = Field(description="the readers' themes; null: every theme")
    language: str
    email: EmailOut | None = Field(description="with preview links; null: nothing in it for these readers")


class EditionTestIn(BaseModel):
    """Where to send a test, and whom it shows the edition as (as the preview: a subscriber, or themes and a
    language)."""

    model_config = ConfigDict(extra="forbid")

    to: str
    subscriber: str | None = Field(None, description="as this subscriber (id or address) gets it")
    themes: list[str] | None = Field(None, description="as readers of these themes get it; none: every theme")
    language: str | None = None


class EditionTestSent(BaseModel):
    to: str
    subject: str
    themes: list[str] | None
    language: str


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
        reads=list(s.reads),
        language_choice=s.language_choice,
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
    if isinstance(error, api.IdempotencyConflict | api.SubscriberRefused | api.NothingToSend):
        return ApiProblem(409, error.code, str(error), field=error.field)
    if isinstance(error, api.TooLarge):
        return ApiProblem(413, error.code, str(error))
    if isinstance(error, DeliveryError):
        return ApiProblem(502, "not_sent", f"the mail relay did not take it: {error}")
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
    service: Callable[[], Service],
    settings: Settings,
    wake_sender: Callable[[], None] | None = None,
    wake_notices: Callable[[], None] | None = None,
) -> FastAPI:
    """The API, to mount at PREFIX: ``service`` opens the store on first use. ``wake_sender`` is called when an
    edition is approved or resumed, ``wake_notices`` when a confirmation email is queued (the web app's notices'
    drain; without it, the drain finds it at its next poll)."""
    app = FastAPI(
        title=f"{settings.site.title} API", version=__version__, openapi_url=None, docs_url=None, redoc_url=None
    )
    for error_type in (Exception, StarletteHTTPException, RequestValidationError, SyndicationError, ApiProblem):
        app.add_exception_handler(error_type, _problem)
    limits = site_limit(settings, "api-token", settings.api.requests_per_minute, 60.0)
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

    @app.post(
        "/posts/import",
        response_model=PostsImported,
        summary=f"Import up to {api.MAX_BATCH} posts at once, each validated as an import line (scope posts)",
        description="A JSON array of post records (the JSON Lines format). Each item is checked on its own: the"
        " answer says, item by item, what was done (created, updated, unchanged) or why it was refused; the valid"
        " items are kept whatever the others. A bigger batch is refused whole (413).",
        responses=_problems(401, 403, 409, 413, 422, 429),
    )
    def import_posts(
        records: Annotated[list[Any], Body(description="post records, as `syndication import` reads them")],
        token: Annotated[ApiToken, caller("posts")],
        idempotency_key: Key = None,
    ) -> Response:
        def run() -> tuple[int, BaseModel]:
            outcomes = api.import_posts(service(), records)
            counts = dict.fromkeys(("created", "updated", "unchanged", "refused"), 0)
            for outcome in outcomes:
                counts[outcome.action] += 1
            items = [
                ImportedPost(
                    index=o.index, action=o.action, guid=o.guid, id=o.post_id, reason=o.reason, field=o.field_name,
                    warnings=o.warnings,
                )
                for o in outcomes
            ]  # fmt: skip
            return 200, PostsImported(counts=counts, items=items)

        return once(token, idempotency_key, "POST /posts/import", records, run)

    @app.delete(
        "/posts/{reference:path}",
        status_code=204,
        summary="Delete a post, by guid or id, as `posts delete` does: the next feed build drops it (scope posts)",
        responses=_problems(401, 403, 404, 429),
    )
    def delete_post(reference: str, token: Annotated[ApiToken, caller("posts")]) -> Response:
        post_id, post = api.unpublish_post(service(), reference)
        log.info("API token %s deleted post %d (%s)", token.name, post_id, post.guid)
        return Response(status_code=204)

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
        "/editions/{edition_id}/preview",
        response_model=EditionPreview,
        summary="An edition as some readers get it, with preview links: subject, HTML and text (scope read)",
        description="As the editor's preview: `subscriber` (an id or address) shows it as they get it; otherwise"
        " `themes` (none: every theme) in `language` (none: the site's).",
        responses=_problems(401, 403, 404, 422, 429),
    )
    def preview_edition(
        edition_id: int,
        token: Annotated[ApiToken, reading],
        subscriber: Annotated[str | None, Query(description="a subscriber's id or address")] = None,
        themes: Annotated[list[str] | None, Query(description="theme slugs (repeat the parameter)")] = None,
        language: str | None = None,
    ) -> EditionPreview:
        current = service()
        who = api.readers(current, subscriber=subscriber, themes=themes, language=language)
        email = api.preview_edition(current, edition_id, who)
        shown = None if email is None else EmailOut(
            subject=email.subject, preheader=email.preheader, html=email.html, text=email.text
        )  # fmt: skip
        return EditionPreview(
            edition_id=edition_id, themes=None if who.themes is None else list(who.themes), language=who.language,
            email=shown,
        )  # fmt: skip

    @app.post(
        "/editions/{edition_id}/test",
        response_model=EditionTestSent,
        summary="Send a test of an edition to one address, recorded in the audit log (scope send)",
        description="Sent at once, as the editor's test: as `subscriber` gets it, or as readers of `themes` in"
        " `language`, with preview links.",
        responses=_problems(401, 403, 404, 409, 422, 429, 502),
    )
    def test_edition(
        edition_id: int, body: EditionTestIn, token: Annotated[ApiToken, caller("send")], idempotency_key: Key = None
    ) -> Response:
        def run() -> tuple[int, BaseModel]:
            current = service()
            who = api.readers(current, subscriber=body.subscriber, themes=body.themes, language=body.language)
            address, sent = api.send_edition_test(current, edition_id, body.to, who, actor=token.actor)
            themes = None if who.themes is None else list(who.themes)
            return 200, EditionTestSent(to=address, subject=sent.subject, themes=themes, language=who.language)

        return once(token, idempotency_key, f"POST /editions/{edition_id}/test", body.model_dump(), run)

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
        summary="Add a subscriber: pending with a confirmation email (queued), or active when `confirmed`"
        " (scope subscribers)",
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
                queue_confirmation=True,
            )
            if outcome.confirmation_queued and wake_notices is not None:
                wake_notices()
            added = SubscriberAdded(
                action=outcome.action,
                subscriber=_subscriber(outcome.subscriber),
                confirmation_queued=outcome.confirmation_queued,
            )
            return (200 if outcome.action == "exists" else 201), added

        return once(token, idempotency_key, "POST /subscribers", fields, run)

    @app.post(
        "/subscribers/import",
        response_model=SubscribersImported,
        summary=f"Import up to {api.MAX_BATCH} subscribers at once, as `subscribers import` (scope subscribers)",
        description="The same consent rules as `subscribers import`: new subscribers are pending and get a"
        " confirmation email (queued), or active with `confirmed`; existing ones change only with `update` or"
        " `confirmed`; ended ones come back only with `confirmed`, `reactivate` and a `reason`; removed addresses"
        " never. Each item is checked on its own: the answer says, item by item, what was done or why it was"
        " refused; the valid items are kept whatever the others.",
        responses=_problems(401, 403, 409, 413, 422, 429),
    )
    def import_subscribers(
        body: SubscribersIn, token: Annotated[ApiToken, caller("subscribers")], idempotency_key: Key = None
    ) -> Response:
        def run() -> tuple[int, BaseModel]:
            report, outcomes = api.import_subscriber_batch(
                service(), body.subscribers, source=f"API import by token {token.name}", confirmed=body.confirmed,
                update=body.update, reactivate=body.reactivate, reason=body.reason, actor=token.actor,
            )  # fmt: skip
            if report.confirmations_queued and wake_notices is not None:
                wake_notices()
            counts = {
                "added": report.added, "activated": report.activated, "updated": report.updated,
                "unchanged": report.unchanged, "refused": len(report.refused),
            }  # fmt: skip
            items = [
                ImportedSubscriber(index=o.index, action=o.action, email=o.email, id=o.subscriber_id, reason=o.reason)
                for o in outcomes
            ]
            imported = SubscribersImported(counts=counts, confirmations_queued=report.confirmations_queued, items=items)
            return 200, imported

        return once(token, idempotency_key, "POST /subscribers/import", body.model_dump(), run)

    @app.get(
        "/subscribers/export",
        response_model=list[dict[str, Any]],
        summary="Everything held on every subscriber, as `subscribers export` writes it (scope subscribers)",
        description="One record per subscriber in id order, with every column the store holds (consent included);"
        " POST /subscribers/import reads them as they are.",
        responses=_problems(401, 403, 429),
    )
    def export_subscribers(token: Annotated[ApiToken, caller("subscribers")]) -> JSONResponse:
        records = api.subscriber_records(service())
        log.info("API token %s exported %d subscribers", token.name, len(records))
        return JSONResponse(jsonable_encoder(records))

    @app.get(
        "/subscribers/{reference}",
        response_model=SubscriberOut,
        summary="One subscriber, by id or address (scope subscribers)",
        responses=_problems(401, 403, 404, 429),
    )
    def get_subscriber(reference: str, token: Annotated[ApiToken, caller("subscribers")]) -> SubscriberOut:
        return _subscriber(api.find_subscriber_by_reference(service(), reference))

    @app.patch(
        "/subscribers/{reference}",
        response_model=SubscriberChanged,
        summary="Change a subscriber's preferences, checked as the preferences page checks them (scope subscribers)",
        description="Only the fields given change. An unsubscribed, bounced or complained subscriber is refused"
        " (409): they subscribe again themselves.",
        responses=_problems(401, 403, 404, 409, 422, 429),
    )
    def change_subscriber(
        reference: str, body: SubscriberChange, token: Annotated[ApiToken, caller("subscribers")]
    ) -> SubscriberChanged:
        current = service()
        found = api.find_subscriber_by_reference(current, reference)
        changes = body.model_dump(exclude_unset=True)
        api.check_preferences(current, changes)
        themes = changes.get("themes")
        if "themes" in changes and themes is None:
            themes = []  # null, as in a subscriber's record: every theme
        result = update_preferences(
            current, found.id, themes=themes, cadence=changes.get("cadence"), language=changes.get("language"),
            name=changes.get("name"), reads=changes.get("reads"), language_choice=changes.get("language_choice"),
        )  # fmt: skip
        if result is None:
            raise api.NotFound(f"no subscriber {reference!r}")
        subscriber, changed = result
        return SubscriberChanged(changed=changed, subscriber=_subscriber(subscriber))

    @app.post(
        "/subscribers/{reference}/unsubscribe",
        response_model=SubscriberLeft,
        summary="Unsubscribe a subscriber, as their unsubscribe link does (scope subscribers)",
        description="Idempotent; a bounced or complained subscriber keeps that status.",
        responses=_problems(401, 403, 404, 429),
    )
    def unsubscribe_subscriber(reference: str, token: Annotated[ApiToken, caller("subscribers")]) -> SubscriberLeft:
        current = service()
        found = api.find_subscriber_by_reference(current, reference)
        left = unsubscribe(current, found.id)
        if left is None:
            raise api.NotFound(f"no subscriber {reference!r}")
        return SubscriberLeft(previous_status=found.status, subscriber=_subscriber(left))

    @app.delete(
        "/subscribers/{reference}",
        response_model=SubscriberErased,
        summary="Erase a subscriber and suppress the address, as `subscribers remove`; audited (scope subscribers)",
        description="Everything held on them is erased (their deliveries stay, without them) and only the"
        " address's SHA-256 is kept, so that no import or add brings it back. By address, an address that is not"
        " subscribed is suppressed all the same; by id, an unknown id is a 404.",
        responses=_problems(401, 403, 404, 422, 429),
    )
    def erase_subscriber(reference: str, token: Annotated[ApiToken, caller("subscribers")]) -> SubscriberErased:
        current = service()
        if "@" in reference:
            try:
                address = normalise_email(reference)
            except SyndicationError as error:
                raise api.BadInput(str(error), field="reference") from None
        else:
            address = api.find_subscriber_by_reference(current, reference).email
        return SubscriberErased(outcome=remove_subscriber(current, address, actor=token.actor))

    @app.get(
        "/bounces",
        response_model=BouncePage,
        summary="Bounces counted against subscribers, newest first (scope subscribers)",
        description="Each with the subscriber's address (null once erased): personal data, hence the subscribers"
        " scope.",
        responses=_problems(401, 403, 422, 429),
    )
    def list_bounces(
        token: Annotated[ApiToken, caller("subscribers")], limit: Limit = 50, cursor: Cursor = None
    ) -> BouncePage:
        page = api.bounce_page(service(), cursor=cursor, limit=limit)
        items = [
            BounceOut(
                id=b.id, at=b.at, email=email, subscriber_id=b.subscriber_id, delivery_id=b.delivery_id,
                edition_id=b.edition_id, source=b.source, fault=b.fault, status=b.status, diagnostic=b.diagnostic,
                score=b.score,
            )
            for b, email in page.items
        ]  # fmt: skip
        return BouncePage(items=items, next=page.next)

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
