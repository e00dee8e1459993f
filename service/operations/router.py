"""Liveness, readiness and metrics for the operator."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.db import READ_ONLY
from service.errors import ServiceUnavailable
from service.migrate import current_revision

router = APIRouter(tags=["operations"])


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
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
