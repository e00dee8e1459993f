"""Liveness, readiness and metrics for the operator."""

import hmac
import threading
from collections.abc import Iterator, Mapping

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from service.db import READ_ONLY, RETRY_AFTER_S, deadline
from service.dispatch import circuit
from service.dispatch.notifiers.base import Notifier
from service.errors import NotFound, ServiceUnavailable
from service.migrate import current_revision
from service.operations.figures import DatabaseFigures
from service.rate_limits import RateLimits

router = APIRouter(tags=["operations"])
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, object]:
    """Ready when the database answers within ready_timeout_s and its schema is at head. The
    check runs in a worker thread, abandoned when late (its connection is cut at the bound)."""
    state = request.app.state
    bound = state.settings.ready_timeout_s
    try:
        with anyio.fail_after(bound):
            revision, circuits = await anyio.to_thread.run_sync(
                _schema_revision, state.engine, bound, abandon_on_cancel=True
            )
    except TimeoutError as exc:
        raise ServiceUnavailable(
            f"database unreachable: no answer within {bound:g} s", retry_after_s=RETRY_AFTER_S
        ) from exc
    except Exception as exc:
        raise ServiceUnavailable(
            f"database unreachable: {type(exc).__name__}", retry_after_s=RETRY_AFTER_S
        ) from exc
    # The schema's revision and the notifiers' states are for whoever may read /metrics: the
    # exact release, the SMS provider and its outage are not for everyone (a probe read them).
    shown = _may_read_figures(request)
    if revision != state.schema_head:
        raise ServiceUnavailable(
            f"database schema at {revision}, expected {state.schema_head}: run `anjeon migrate`"
            if shown
            else "database schema not at the code's head: run `anjeon migrate`"
        )
    if not shown:
        return {"status": "ready"}
    # Each configured notifier's circuit breaker (closed until it first opens): a provider
    # that is down does not make the process unready, but the operator sees it here.
    names = sorted({n.name for n in state.dispatcher.notifiers.values()})
    notifiers = {name: circuits.get(name, circuit.CLOSED) for name in names}
    return {"status": "ready", "schema": revision, "notifiers": notifiers}


def _may_read_figures(request: Request) -> bool:
    """With ANJEON_METRICS_TOKEN set, whoever gives it; without, anyone outside production."""
    settings = request.app.state.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        return settings.environment != "production"
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def _schema_revision(engine: Engine, bound_s: float) -> tuple[str | None, dict[str, str]]:
    with deadline(bound_s), engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        conn.execute(text("SELECT 1"))
        revision = current_revision(conn)
        circuits: dict[str, str] = {}
        try:
            with Session(bind=conn) as session:
                circuits = circuit.states(session)
        except SQLAlchemyError:
            pass  # a schema behind the code's head: the revision says so
        return revision, circuits


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text. With ANJEON_METRICS_TOKEN set it needs that bearer token; in
    production without one it is off (queue depths and counts are not for everyone)."""
    settings = request.app.state.settings
    if not _may_read_figures(request):
        if settings.metrics_token and settings.metrics_token.get_secret_value():
            raise HTTPException(401, "/metrics needs its bearer token", headers=_CHALLENGE)
        raise NotFound("/metrics is off in production until ANJEON_METRICS_TOKEN is set")
    return Response(generate_latest(_registry(request.app)), media_type=CONTENT_TYPE_LATEST)


_registry_lock = threading.Lock()


def _registry(app: FastAPI) -> CollectorRegistry:
    """This process's counters and this app's database figures (an app per test has its own
    database, so the figures cannot live on the process-wide registry)."""
    with _registry_lock:
        registry = getattr(app.state, "metrics_registry", None)
        if registry is None:
            registry = CollectorRegistry()
            registry.register(REGISTRY)
            enabled = [feed for feed in app.state.feeds if feed.enabled]
            registry.register(
                DatabaseFigures(
                    app.state.engine,
                    feed_intervals={feed.name: feed.interval_s for feed in enabled},
                    feed_stale_after={
                        feed.name: feed.stale_after_s for feed in enabled if feed.stale_after_s
                    },
                    notifier_channels=_channels_of(app.state.dispatcher.notifiers),
                )
            )
            registry.register(RateLimitStorageUp(app.state.rate_limits))
            registry.register(CodesLeft(app.state.rate_limits))
            app.state.metrics_registry = registry
        return registry


def _channels_of(notifiers: Mapping[str, Notifier]) -> dict[str, list[str]]:
    """The channels each configured notifier sends (one instance may send both)."""
    channels: dict[str, list[str]] = {}
    for channel, notifier in notifiers.items():
        channels.setdefault(notifier.name, []).append(channel)
    return channels


class RateLimitStorageUp(Collector):
    """anjeon_rate_limit_storage_up, asked of the storage at each scrape: with it down,
    registrations and codes are refused (503) while /readyz stays ready on purpose (taking
    every API process out of the balancer would stop check-in answers and the console too),
    so nothing else showed it (an operator's review)."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    def describe(self) -> Iterator[Metric]:
        yield self._family(0)

    def collect(self) -> Iterator[Metric]:
        yield self._family(int(self._limits.healthy()))

    @staticmethod
    def _family(up: int) -> Metric:
        return GaugeMetricFamily(
            "anjeon_rate_limit_storage_up",
            "1 when the rate-limit storage (ANJEON_RATE_LIMIT_STORAGE) answered this scrape",
            value=up,
        )


class CodesLeft(Collector):
    """anjeon_codes_left{channel, pool}, read from the rate-limit storage at each scrape (so
    every process reports the same with Redis): what each channel's shared pools of codes may
    still send in their windows. At 0 every traveller who registers is held without a code,
    and a registration still answers 201."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            left = self._limits.codes_left()
        except ServiceUnavailable:  # anjeon_rate_limit_storage_up says so
            left = {}
        for (channel, pool), codes in sorted(left.items()):
            family.add_metric([channel, pool], codes)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "anjeon_codes_left",
            "Codes (and other messages that are not alerts) each channel's shared pool may still "
            "send in its window: plain (ANJEON_RATE_LIMIT_GLOBAL) or proven "
            "(ANJEON_RATE_LIMIT_GLOBAL_PROVEN)",
            labels=["channel", "pool"],
        )
