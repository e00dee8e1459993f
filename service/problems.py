"""RFC 9457 problem details for every 4xx/5xx the API answers."""

import html
import logging
from http import HTTPStatus
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import Scope

from service.auth import refusal_before_body, staff_role_of
from service.db import RETRY_AFTER_S, database_unavailable
from service.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from service.forms import PAGE_HEADERS

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
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
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


# The errors a 422 names, the first found: a 1 MB body of unknown keys had 104,000 of them
# named, an 11 MB answer built in 0.37 s on the event loop, for anyone, before any limit.
MAX_ERRORS = 20

# A body that is not JSON at all: a staff route refuses a missing or weak key first.
_UNREADABLE_BODY = ("json_invalid", "utf8_invalid", "body_unreadable")
_UNPARSED = "There was an error parsing the body"  # FastAPI's, for what json.loads raised
# What json.loads raises on bytes it gives up on (a client gone, MemoryError: as before).
_JSON_GAVE_UP = (UnicodeDecodeError, RecursionError, ValueError)


def _unread(cause: BaseException) -> dict[str, Any]:
    """The validation error for a body json.loads could not read."""
    if isinstance(cause, UnicodeDecodeError):
        return {"type": "utf8_invalid", "loc": ("body", cause.start)}
    if isinstance(cause, RecursionError):
        why = "nested too deep"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        why = "a number has too many digits"  # Python reads at most 4,300 into an int
    else:
        why = type(cause).__name__
    return {"type": "body_unreadable", "loc": ("body",), "msg": why}


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    broken = any(error.get("type") in _UNREADABLE_BODY for error in exc.errors())
    if broken and (minimum := staff_role_of(request)) is not None:
        # The key is looked up as the route would have: a database that does not answer is
        # the same 503 (or 500) that route would give, not the 422.
        try:
            refusal = await anyio.to_thread.run_sync(refusal_before_body, request, minimum)
        except DBAPIError as error:
            return await _on_database_error(request, error)
        except PoolTimeout as error:
            return await _on_pool_timeout(request, error)
        if isinstance(refusal, DomainError):
            return await _on_domain_error(request, refusal)
        if refusal is not None:
            return await _on_http_error(request, refusal)
    errors = []
    found = exc.errors()
    for error in found[:MAX_ERRORS]:
        loc = tuple(error.get("loc", ()))
        field = json_path(loc)
        if error.get("type") == "extra_forbidden":
            message = "unknown field: not accepted here"
        elif error.get("type") == "json_invalid":
            # Its loc is ("body", character position): the field is the body itself.
            where = f" (at character {loc[1]})" if len(loc) > 1 else ""
            field, message = "body", f"body is not valid JSON{where}"
        elif error.get("type") == "utf8_invalid":
            field, message = "body", f"body is not valid UTF-8 (at byte {loc[1]})"
        elif error.get("type") == "body_unreadable":
            field, message = "body", f"body cannot be read as JSON: {error['msg']}"
        elif loc == ("body",) and not _sent_as_json(request):
            # FastAPI reads a body of another type as no JSON at all ("Input should be a valid
            # dictionary…"): say what to send instead.
            sent = request.headers.get("content-type", "")[:60] or "none"
            message = (
                "send the body as JSON, with Content-Type: application/json "
                f"(this request's Content-Type: {sent})"
            )
        elif loc == ("body",) and error.get("type") in ("model_attributes_type", "dict_type"):
            message = "must be a JSON object"
        else:
            message = _validation_message(error)
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    if len(found) > MAX_ERRORS:
        detail += f"; and {len(found) - MAX_ERRORS} more"
    return problem_response(422, "Invalid input", detail, slug="validation-error", errors=errors)


def _sent_as_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


# What a citizen's browser shows for a link page's refusal (`/a/…`, `/c/…`), in both languages:
# a person who opened a cut or old link from a text message must not be shown JSON.
_CITIZEN_PAGE_PREFIXES = ("/a/", "/c/")
_CITIZEN_SAYS = {
    404: (
        "이 링크는 올바르지 않거나 기간이 지났습니다.",
        "This link is not valid, or it has expired.",
    ),
    429: ("잠시 후 다시 시도해 주세요.", "Please try again in a little while."),
    422: (
        "요청을 처리하지 못했습니다. 페이지로 돌아가 다시 눌러 주세요.",
        "We could not take that. Go back and press a button again.",
    ),
}
_CITIZEN_OTHERWISE = (
    "지금은 처리할 수 없습니다. 잠시 후 다시 시도해 주세요.",
    "We cannot take this now. Please try again later.",
)
_CITIZEN_EMERGENCY = (
    "긴급하면 현지 긴급전화나 영사콜센터(+82-2-3210-0404)로 연락하세요.",
    "In an emergency call the local emergency number "
    "or the consular call centre (+82-2-3210-0404).",
)


def _wants_citizen_page(request: Request) -> bool:
    return request.url.path.startswith(
        _CITIZEN_PAGE_PREFIXES
    ) and "text/html" in request.headers.get("accept", "")


def _citizen_page(
    request: Request, status: int, headers: dict[str, str] | None = None
) -> HTMLResponse:
    ko, en = _CITIZEN_SAYS.get(status, _CITIZEN_OTHERWISE)
    settings = request.app.state.settings
    sender = html.escape(f"{settings.alert_sender_ko} · {settings.alert_sender_en}")
    body = (
        '<!doctype html>\n<html lang="ko"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{sender}</title>"
        "<style>body{font-family:sans-serif;max-width:36em;margin:1em auto;padding:0 1em}</style>"
        f'</head><body><h1>{ko}</h1><p lang="en"><strong>{en}</strong></p>'
        f'<p>{_CITIZEN_EMERGENCY[0]}</p><p lang="en">{_CITIZEN_EMERGENCY[1]}</p>'
        f"<p><small>{sender}</small></p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


async def _on_domain_error(request: Request, exc: DomainError) -> Response:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors] or None
    headers = None
    if isinstance(exc, ServiceUnavailable | TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after_s)}
    if _wants_citizen_page(request):
        return _citizen_page(request, exc.status, headers)
    extra = {"proof": exc.proof} if isinstance(exc, TooManyRequests) and exc.proof else None
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        slug=exc.slug,
        errors=errors,
        headers=headers,
        extra=extra,
    )


async def _on_http_error(request: Request, exc: HTTPException) -> Response:
    cause = exc.__cause__
    if exc.status_code == 400 and exc.detail == _UNPARSED and isinstance(cause, _JSON_GAVE_UP):
        # FastAPI's 400 names no field, and came before the staff key was looked at: a body
        # that cannot be read is bad input like any other JSON that does not parse.
        return await _on_validation_error(request, RequestValidationError([_unread(cause)]))
    headers = getattr(exc, "headers", None)
    if exc.status_code == 413:
        # A chunked body counted past the limit while the app read it: closed as a
        # Content-Length over it is (BodyLimitMiddleware, before the app), or uvicorn reads
        # on, discarding whatever the client streams.
        headers = {**(headers or {}), "Connection": "close"}
    if _wants_citizen_page(request):
        return _citizen_page(request, exc.status_code, headers)
    if exc.status_code == 413:
        # The same problem as that one's.
        return problem_response(
            413, "Content Too Large", str(exc.detail), slug="body-too-large", headers=headers
        )
    title = HTTPStatus(exc.status_code).phrase
    # The same type as a domain error's of that status: a newcomer found two 403s of two
    # types (the role check's about:blank, a self-approval's forbidden).
    slug = _HTTP_SLUGS.get(exc.status_code)
    return problem_response(exc.status_code, title, str(exc.detail), slug=slug, headers=headers)


_HTTP_SLUGS = {
    401: "unauthorized",
    405: "method-not-allowed",
    **{
        error.status: error.slug
        for error in (Forbidden, NotFound, Conflict, TooManyRequests, ServiceUnavailable)
    },
}


async def _on_database_error(request: Request, exc: DBAPIError) -> Response:
    if not database_unavailable(exc):
        return await _on_crash(request, exc)
    log.warning("database unavailable", extra={"error": type(exc.orig).__name__})
    return unavailable(request, "the database is unavailable; nothing was changed, retry later")


async def _on_pool_timeout(request: Request, exc: PoolTimeout) -> Response:
    # Every pooled connection is busy (requests stuck on a database that stopped answering).
    log.warning("database unavailable", extra={"error": "pool timeout"})
    return unavailable(request, "the database is unavailable; nothing was changed, retry later")


def unavailable(request: Request, detail: str) -> Response:
    """A 503 with Retry-After: the citizen's page (with the emergency numbers) to a browser on a
    citizen's link, a problem to everyone else. A crisis is when a citizen meets it."""
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if _wants_citizen_page(request):
        return _citizen_page(request, 503, headers)
    return problem_response(503, "Service unavailable", detail, slug="unavailable", headers=headers)


def logged_route(scope: Scope) -> str:
    """The route template a log line names, never the path: a citizen's link carries its
    bearer token in the path (/c/<token>), and whoever reads the log must not answer for them."""
    route = getattr(scope.get("route"), "path", None)
    return route if isinstance(route, str) else "unmatched"


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"method": request.method, "route": logged_route(request.scope)},
    )
    if _wants_citizen_page(request):
        return _citizen_page(request, 500)
    return problem_response(500, "Internal Server Error", "an unexpected error occurred")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(PoolTimeout, _on_pool_timeout)
    app.add_exception_handler(Exception, _on_crash)
