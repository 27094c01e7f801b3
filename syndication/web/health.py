"""``/healthz``, ``/readyz`` and ``/metrics`` (docs/operations.md), and what every request goes through for them:
an id of its own (``X-Request-ID``) put on its log records, and its count and latency by route template."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syndication import __version__
from syndication.app.health import open_health_store, store_figures, store_problems
from syndication.app.service import Service
from syndication.config import Settings
from syndication.runtime.logs import REQUEST_ID
from syndication.runtime.metrics import HTTP_REQUESTS, HTTP_SECONDS, scheduler_state
from syndication.web.limits import shared_storage

log = logging.getLogger(__name__)

# An X-Request-ID worth keeping: short, and nothing a log line or a header could be bent by.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/@-]{1,128}")
# Methods counted by name; anything else (a scanner's verbs) under "other": label values stay few.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Headers a proxy adds: behind one, the client address is the proxy's, and says nothing about who asks.
_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


class RequestMiddleware:
    """Gives each request an id (its ``X-Request-ID`` when sane, else a new one), echoed in the answer and put on
    the log records of the request; counts the request by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"").decode("latin-1")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Each request runs in a context of its own (uvicorn starts a task per request): nothing to reset, and
        # the app's last-resort error handler, outside this middleware, still logs under the id.
        REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception escaped and the error handler answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    """The path template of the route that took the request (``/editions/{edition_id:row_id}``), never the raw
    path: one series per route, however many addresses are asked for; ``unmatched`` when no route took it."""
    route = scope.get("route")
    if route is None:  # FastAPI's router does not say which of the app's own Starlette routes it chose
        router = getattr(scope.get("app"), "router", None)
        route = next((each for each in getattr(router, "routes", ()) if each.matches(scope)[0] != Match.NONE), None)
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else "unmatched"


class Health:
    """The three endpoints, on a store of their own opened on first use (even when its schema is behind, which
    ``/readyz`` then says) and closed with the app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._service: Service | None = None
        self._lock = threading.Lock()
        self._allow = [ipaddress.ip_network(network) for network in settings.metrics.allow]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProcessCollector())
        self.registry.register(_StoreCollector(self))

    def service(self) -> Service:
        with self._lock:
            if self._service is None:
                self._service = open_health_store(self.settings)
            return self._service

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None

    def routes(self) -> list[Route]:
        """GET (and so HEAD) ``/healthz``, ``/readyz`` and ``/metrics``."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        """The process answers: nothing else is looked at (no store), so it costs nothing."""
        return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})

    async def readyz(self, request: Request) -> Response:
        """200 when the store answers at this version's schema and the scheduler, if this process runs one, is not
        stopping; else 503. The JSON body names each check and what is wrong; with ``[web] limits_storage`` in
        Redis, ``limits`` says whether it answers (a node whose Redis does not still serves: ready)."""
        checks = await run_in_threadpool(self._checks)
        # The limits' storage is reported, never a reason to take the node out: without it, it counts in process.
        ready = all(value in ("ok", "leader", "standby") for name, value in checks.items() if name != "limits")
        body = orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks}) + b"\n"
        return Response(body, status_code=200 if ready else 503, media_type="application/json",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    def _checks(self) -> dict[str, str]:
        checks = {"database": "ok", "schema": "ok"}
        try:
            checks.update(store_problems(self.service()))
        except Exception:  # an engine that cannot even be made (a driver missing): not ready, and why in the log
            log.exception("readiness: the store cannot be opened", extra={"event": "not-ready"})
            checks["database"] = "unreachable"
        if checks["database"] != "ok":
            checks["schema"] = "unknown"
        state = scheduler_state()
        if state is not None:
            checks["scheduler"] = state
        shared = shared_storage(self.settings)
        if shared is not None:
            problem = shared.problem()
            checks["limits"] = "ok" if problem is None else "unreachable: counting in each process"
        return checks

    async def metrics(self, request: Request) -> Response:
        """The figures in Prometheus' text format, to the clients ``[metrics]`` lets in."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    def _refusal(self, request: Request) -> Response | None:
        """403 to an address ``[metrics] allow`` leaves out, or through a proxy without a token; 401 without the
        token when one is set; None to let the request in."""
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            address = None
        if address is None or not any(address in network for network in self._allow):
            return PlainTextResponse("metrics are not served to this address\n", status_code=403)
        token = self.settings.metrics.token
        if token is None:
            if any(name in request.headers for name in _FORWARDED):
                return PlainTextResponse("metrics through a proxy need [metrics] token\n", status_code=403)
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return PlainTextResponse("a bearer token is needed\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="metrics"'})  # fmt: skip
        return None


class _ProcessCollector(Collector):
    """This process's own: the in-process counters (``runtime.metrics``) and prometheus-client's process, platform
    and garbage collector figures, all in its default registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class _StoreCollector(Collector):
    """The store's counts, read at each scrape through ``app.health``; the scheduler's leadership when this process
    runs one. ``syndication_store_up`` is 0, and the rest left out, when the store cannot be read."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("syndication_build_info", "The running version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        state = scheduler_state()
        if state is not None:
            yield GaugeMetricFamily(
                "syndication_scheduler_leader",
                "1 while this process's scheduler leads (schedules gathering, feeds and editions), else 0.",
                value=1 if state == "leader" else 0,
            )
        try:
            figures = store_figures(self.health.service())
        except Exception:  # a scrape must answer: say the store is down, and why in the log
            log.exception("metrics: the store cannot be read", extra={"event": "metrics-store-failed"})
            yield GaugeMetricFamily("syndication_store_up", "1 when the store could be read for this scrape.", 0)
            return
        yield GaugeMetricFamily("syndication_store_up", "1 when the store could be read for this scrape.", 1)
        by_label: list[tuple[str, str, str, dict[str, int]]] = [
            ("syndication_deliveries", "Deliveries in the store, by status.", "status", figures.deliveries),
            ("syndication_editions", "Editions in the store, by status.", "status", figures.editions),
            ("syndication_subscribers", "Subscribers, by status.", "status", figures.subscribers),
            ("syndication_bounces", "Bounces counted against subscribers, by fault.", "fault", figures.bounces),
            ("syndication_inbound_messages", "Messages received at the bounce address, by kind (complaint: a "
             "spam report).", "kind", figures.inbound),
        ]  # fmt: skip
        for name, text, label, counts in by_label:
            family = GaugeMetricFamily(name, text, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            yield family
        yield GaugeMetricFamily(
            "syndication_queue_depth", "Deliveries of sending editions still to send (due or not).", figures.queue_depth
        )
        yield GaugeMetricFamily(
            "syndication_queue_oldest_due_seconds",
            "How long the longest-waiting due delivery has waited (0 when none is due).",
            figures.oldest_due_seconds,
        )
        ok = GaugeMetricFamily(
            "syndication_job_last_success", "1 if a job's last finished run went well.", labels=["job"]
        )
        when = GaugeMetricFamily(
            "syndication_job_last_finished_timestamp_seconds", "When a job's last run finished.", labels=["job"]
        )
        for job in figures.jobs:
            if job.ok is not None:
                ok.add_metric([job.job_id], 1 if job.ok else 0)
            if job.finished_at is not None:
                when.add_metric([job.job_id], job.finished_at.timestamp())
        yield ok
        yield when
