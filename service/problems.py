"""RFC 9457 problem details for every 4xx/5xx the API answers."""

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from service.db import RETRY_AFTER_S
from service.errors import DomainError, ServiceUnavailable, TooManyRequests

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:anjeon:problem:"
log = logging.getLogger(__name__)


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def json_path(loc: tuple[int | str, ...]) -> str:
    """('body', 'stays', 0, 'to') -> 'stays[0].to'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "tagged-union[")):
            continue  # pydantic's names for validator wrappers, not fields
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    # pydantic prefixes messages of our own ValueErrors; the field already says where.
    return message.removeprefix("Value error, ")


async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "extra_forbidden":
            message = "unknown field: not accepted here"
        elif error.get("type") == "json_invalid":
            message = "body is not valid JSON"
        else:
            message = _validation_message(error)
        errors.append({"field": json_path(loc), "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem_response(422, "Invalid input", detail, slug="validation-error", errors=errors)


async def _on_domain_error(_request: Request, exc: DomainError) -> JSONResponse:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors] or None
    headers = None
    if isinstance(exc, ServiceUnavailable | TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return problem_response(
        exc.status, exc.title, exc.detail, slug=exc.slug, errors=errors, headers=headers
    )


async def _on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    title = HTTPStatus(exc.status_code).phrase
    return problem_response(
        exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None)
    )


async def _on_database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    # OperationalError covers refused connections, timeouts and SQLite's "database is locked";
    # a connection lost mid-statement is invalidated whatever psycopg called its error.
    if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
        return await _on_crash(request, exc)
    log.warning("database unavailable", extra={"error": type(exc.orig).__name__})
    return _unavailable()


async def _on_pool_timeout(_request: Request, exc: PoolTimeout) -> JSONResponse:
    # Every pooled connection is busy (requests stuck on a database that stopped answering).
    log.warning("database unavailable", extra={"error": "pool timeout"})
    return _unavailable()


def _unavailable() -> JSONResponse:
    return problem_response(
        503,
        "Service unavailable",
        "the database is unavailable; nothing was changed, retry later",
        slug="unavailable",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"method": request.method, "path": request.url.path},
    )
    return problem_response(500, "Internal Server Error", "an unexpected error occurred")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(PoolTimeout, _on_pool_timeout)
    app.add_exception_handler(Exception, _on_crash)
