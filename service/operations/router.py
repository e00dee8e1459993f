"""Liveness, readiness and metrics for the operator."""

import hmac
import threading

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException

from service.db import READ_ONLY
from service.errors import NotFound, ServiceUnavailable
from service.migrate import current_revision
from service.operations.figures import DatabaseFigures

router = APIRouter(tags=["operations"])
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> dict[str, str]:
    state = request.app.state
    try:
        with state.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
            connection.execute(text("SELECT 1"))
            revision = current_revision(connection)
    except Exception as exc:
        raise ServiceUnavailable(f"database unreachable: {type(exc).__name__}") from exc
    if revision != state.schema_head:
        raise ServiceUnavailable(
            f"database schema at {revision}, expected {state.schema_head}: run `anjeon migrate`"
        )
    return {"status": "ready", "schema": revision}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text. With ANJEON_METRICS_TOKEN set it needs that bearer token; in
    production without one it is off (queue depths and counts are not for everyone)."""
    settings = request.app.state.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
            raise HTTPException(401, "/metrics needs its bearer token", headers=_CHALLENGE)
    elif settings.environment == "production":
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
            registry.register(DatabaseFigures(app.state.engine))
            app.state.metrics_registry = registry
        return registry
