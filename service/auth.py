"""Request-scoped dependencies: the database session, staff roles, citizens' manage tokens."""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from service.audit import service as audit
from service.db import (
    READ_ONLY,
    REQUEST_DEADLINE,
    DeadlinePassed,
    database_unavailable,
    read_first,
    utcnow,
    written_within,
)
from service.errors import DomainError, ServiceUnavailable
from service.head_requests import method_asked
from service.metrics import STAFF_UNCOUNTED
from service.rate_limits import Rule, client_address
from service.staff import service as staff_service
from service.staff.models import Role, StaffKey

log = logging.getLogger("anjeon.auth")
T = TypeVar("T")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# RFC 6750 §3.1: the key is known but no longer good (the console tells its holder so).
_EXPIRED = {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="the key expired"'}


_READS = {"GET", "HEAD", "OPTIONS"}
_READ_REQUEST = "anjeon_read_request"  # session.info key: the request only reads
# request.state: who the role check admitted (an _Actor: the key's row may be expired, and its
# session unusable, by the time a failure is recorded)
_ADMITTED_KEY = "anjeon_admitted_key"


@dataclass(frozen=True)
class _Actor:
    """Who a staff request was, as the audit log names them."""

    name: str
    role: str


@contextmanager
def request_transaction(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the block ends without an exception.
    create_app puts it in `app.state.request_transaction`; tests put a savepoint there.

    A writing request's transaction begins at its first statement, not here: what runs before
    (the staff check, a geocoder's network call) holds no write lock (SQLite's lasts the
    whole transaction)."""
    with request.app.state.session_factory() as session:
        if request.method in _READS:
            session.info[_READ_REQUEST] = True
            session.connection(execution_options={READ_ONLY: True})
        try:
            yield session
            session.commit()
        except Exception as failure:
            session.rollback()
            if (who := getattr(request.state, _ADMITTED_KEY, None)) is not None:
                _record_failure(session, request, who, failure)
            raise


def get_session(request: Request) -> Iterator[Session]:
    """The request's transaction (request_transaction), committed before the response is sent."""
    with request.app.state.request_transaction(request) as session:
        yield session


async def in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """`work` and the request's transaction (committed before the answer) in one thread of
    anyio's pool. A sync endpoint with SessionDep hands off to the pool three or four times
    (the session, the endpoint, the commit, the response model's check); under load each
    hand-off stalls the event loop, so the burst's endpoints (registration, codes, replies,
    delivery reports, the check-in page's answer) take one (docs/benchmarks.md, "One thread
    hand-off"). `work` builds the answer's model itself, so it is checked before the commit."""

    def run() -> T:
        with request.app.state.request_transaction(request) as session:
            return work(session)

    return await anyio.to_thread.run_sync(run)


# scope="function": commit before the response leaves, so a 201 means the data is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@contextmanager
def written_apart(session: Session) -> Iterator[Session]:
    """A write a reading request makes all the same (its audit entry): in a short write
    transaction of its own, then the request reads on in a new read-only one. On SQLite a
    read-only transaction cannot take the write lock later without failing at once ("database
    is locked") when another connection wrote meanwhile. Other requests write in their own
    transaction, so what they did commits with it or neither does."""
    if not session.info.get(_READ_REQUEST):
        yield session
        return
    session.commit()  # the read-only transaction so far: nothing written, what was read kept
    with session.begin():
        yield session
    session.connection(execution_options={READ_ONLY: True})


def _token_of(request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    scheme, _, token = header.partition(" ")
    if not header:
        raise HTTPException(401, "missing bearer token", headers=_CHALLENGE)
    if scheme.lower() != "bearer" or not token.strip():
        # Never echoed: what was sent may be a key.
        raise HTTPException(
            401, 'the Authorization header must read "Bearer " and then the key', headers=_CHALLENGE
        )
    return token.strip()


async def bearer_token(request: Request) -> str:
    # async: a header read needs no thread of anyio's pool (a sync dependency takes one)
    return _token_of(request)


BearerToken = Annotated[str, Depends(bearer_token)]


def _known(session: Session, token: str) -> StaffKey:
    with read_first(session):
        key = staff_service.look_up(session, key=token)
    if why := staff_service.refusal(key, now=utcnow()):
        expired = key is not None and key.revoked_at is None
        if expired:
            # Someone still holds it: an old script, or whoever copied it.
            log.warning("an expired staff key was presented", extra={"staff_key": key.name})
        raise HTTPException(401, why, headers=_EXPIRED if expired else _CHALLENGE)
    assert key is not None  # refusal() names every other case
    return key


_STAFF_LIMIT_RETRY_S = 10.0  # how long staff requests go uncounted after the storage failed


def _take_request(request: Request, key: StaffKey) -> None:
    """Counts the request against its key's limit (rate_limit_staff, shared by every process):
    a leaked key or a runaway script is held to it, and so is the audit log's growth, as a
    request past it is refused (429) before anything is recorded. With the limits' storage
    down the request goes through uncounted: staff must be able to work in a crisis whatever
    became of Redis (a review's console answered 503 to everything)."""
    state = request.app.state
    if getattr(state, "staff_limit_down_until", 0.0) > time.monotonic():
        STAFF_UNCOUNTED.inc()  # asked again shortly: a hung storage must not slow every request
        return
    try:
        state.rate_limits.take(Rule.STAFF, key.name)
    except ServiceUnavailable:
        state.staff_limit_down_until = time.monotonic() + _STAFF_LIMIT_RETRY_S
        STAFF_UNCOUNTED.inc()
        log.warning("staff requests not counted: the rate-limit storage is unavailable")


def _outranked(key: StaffKey, minimum: Role) -> HTTPException | None:
    if Role(key.role).rank < minimum.rank:
        return HTTPException(403, f"this needs the {minimum} role; the key has {key.role}")
    return None


@contextmanager
def _committed_apart(session: Session) -> Iterator[Session]:
    """A write that must stay although the request fails (its refusal in the audit log): in a
    transaction of its own when the request has written nothing yet; inside a test's savepoint
    when there is one (it goes with it)."""
    if session.info.get(_READ_REQUEST):
        with written_apart(session):
            yield session
    elif not session.in_transaction():
        with session.begin():
            yield session
    else:
        yield session


def client_of(request: Request) -> str:
    """The client's address: the socket's peer, or X-Forwarded-For behind trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    trusted = request.app.state.settings.trusted_proxies
    # Every X-Forwarded-For line, in order: a proxy that adds a line of its own after the
    # client's must not leave the client's forged first line to be read alone (a probe chose
    # its own address so).
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    return client_address(peer, forwarded, trusted)


def _audit(
    session: Session,
    request: Request,
    key: StaffKey | _Actor,
    *,
    refused: HTTPException | None = None,
) -> None:
    # Every staff request is recorded in its own transaction's session: what it did commits
    # with its entry, or neither does. A refused one says so, and why.
    route = request.scope.get("route")
    params = request.path_params
    asked = f"{method_asked(request.scope)} {getattr(route, 'path', request.url.path)}"
    audit.record(
        session,
        actor=key.name,
        role=key.role,
        client=client_of(request),
        action=f"{'failed' if refused.status_code >= 500 else 'refused'} {asked}"
        if refused
        else asked,
        subject=" ".join(f"{k}={v}" for k, v in params.items()) or None,
        reason=f"{refused.status_code}: {refused.detail}" if refused else None,
        status=refused.status_code if refused else None,
        now=utcnow(),
    )


def _failure_of(error: Exception) -> tuple[int, str]:
    """The status and reason the problem handlers give this error."""
    if isinstance(error, DomainError):
        return error.status, error.detail
    if isinstance(error, HTTPException):
        return error.status_code, str(error.detail)
    if isinstance(error, RequestValidationError):
        # ("body",) alone: the body as a whole (a list where an object belongs)
        fields = {
            ".".join(str(part) for part in e.get("loc", ())[1:]) or "body" for e in error.errors()
        }
        return 422, f"invalid input: {', '.join(sorted(fields))[:200]}"
    return 500, type(error).__name__


def _record_failure(session: Session, request: Request, who: _Actor, error: Exception) -> None:
    """A staff request its route refused or failed ("refused …", "failed …" for a 5xx), with
    its status and why, apart from the request's own transaction: a write's entry went with
    its rollback, and a read's says nothing of how it ended. A database that does not answer
    in time is not asked again (that would double the client's wait for its 503), unless the
    request ran out of time: its client has had the 503 already."""
    if isinstance(error, DeadlinePassed) or _ran_out_of_time():
        # Its own status when the route refused it (a 4xx) after the deadline.
        timed_out = isinstance(error, DeadlinePassed) or database_unavailable(error)
        _record_late(request, who, None if timed_out else _failure_of(error))
        return
    if database_unavailable(error):
        return
    status, why = _failure_of(error)
    try:
        with _committed_apart(session):
            _audit(session, request, who, refused=HTTPException(status, why.replace("\x00", "")))
    except Exception:  # the request's own error is what the caller must see
        log.warning("a refused staff request could not be recorded", exc_info=True)


def _ran_out_of_time() -> bool:
    deadline = REQUEST_DEADLINE.get()
    return deadline is not None and deadline.passed()


def _record_late(request: Request, who: _Actor, failure: tuple[int, str] | None) -> None:
    """A staff request that ran out of time, as "failed …" with its 503 (or refused with the
    `failure` its route gave after the deadline): a probe's 133 reach previews of 15 s each,
    past their deadline, left no entry at all. In a short transaction on a pool of its own
    (the request's connection may have been cut at the deadline, and the app's pool be all
    taken), each wait bounded by LATE_WRITE_S, not by the request's deadline (passed); when
    even that fails, the log names the key."""
    status, why = failure or (503, "the request ran out of time; nothing was changed")
    late = HTTPException(status, why.replace("\x00", ""))
    try:
        with written_within(request.app.state.late_engine) as session:
            _audit(session, request, who, refused=late)
    except Exception:
        log.warning(
            "a staff request that ran out of time could not be recorded",
            extra={"actor": who.name, "method": request.method, "route": request.url.path},
            exc_info=True,
        )


def record_action(
    session: Session,
    request: Request,
    key: StaffKey,
    *,
    action: str,
    subject: str | None,
    reason: str | None = None,
    status: int | None = None,
) -> None:
    """What a staff request did, beside the request's own entry, in its transaction: the
    subject a request cannot name before it runs (the advisory it created), or its reason;
    `status` when it is a refusal the route answers itself."""
    audit.record(
        session,
        actor=key.name,
        role=key.role,
        client=client_of(request),
        action=action,
        subject=subject[:200] if subject else None,
        reason=reason,
        status=status,
        now=utcnow(),
    )


def require_role(minimum: Role) -> Callable[..., StaffKey]:
    """A dependency admitting staff keys of `minimum` role or above (checked in a read-only
    transaction that ends before the endpoint runs), and recording the request in the audit
    log."""

    def check(request: Request, session: SessionDep, token: BearerToken) -> StaffKey:
        key = _known(session, token)
        _take_request(request, key)
        if refusal := _outranked(key, minimum):
            # A key trying what its role may not (a viewer's escalation) is recorded too.
            with _committed_apart(session):
                _audit(session, request, key, refused=refusal)
            raise refusal
        with written_apart(session):
            _audit(session, request, key)
        # request_transaction records a refusal later
        setattr(request.state, _ADMITTED_KEY, _Actor(name=key.name, role=key.role))
        return key

    check.minimum_role = minimum  # type: ignore[attr-defined] - read by refusal_before_body
    return check


def require_role_without_session(minimum: Role) -> Callable[..., Iterator[StaffKey]]:
    """The same check for endpoints that take no request session (they talk to the network
    and open their own short transactions from the app's session factory)."""

    def check(request: Request, token: BearerToken) -> Iterator[StaffKey]:
        sessions = request.app.state.session_factory
        with sessions() as session:
            key = _known(session, token)
            _take_request(request, key)
            refusal = _outranked(key, minimum)
            with session.begin():
                _audit(session, request, key, refused=refusal)
            if refusal:
                raise refusal
        try:
            yield key
        except Exception as failure:  # the route refused (a 404, a 429): recorded as such
            with sessions() as session:
                _record_failure(session, request, _Actor(name=key.name, role=key.role), failure)
            raise

    check.minimum_role = minimum  # type: ignore[attr-defined] - read by refusal_before_body
    return check


def staff_role_of(request: Request) -> Role | None:
    """The smallest role the request's route admits, when it is a staff route."""
    return _minimum_role(getattr(request.scope.get("route"), "dependant", None))


def refusal_before_body(request: Request, minimum: Role) -> HTTPException | DomainError | None:
    """The 401 or 403 the route's staff check would give this request, if any. A body that is
    not JSON at all is refused before any dependency runs; a caller without a valid key is told
    that first, as for every other body, and learns nothing of what the route parses. A known
    key's request is recorded as the route's own check records it: refused for its role (a
    viewer's escalation with a broken body is an escalation still), or for its body."""
    try:
        token = _token_of(request)
        with request.app.state.session_factory() as session:
            key = _known(session, token)
            _take_request(request, key)
            refusal = _outranked(key, minimum)
            with session.begin():
                _audit(
                    session,
                    request,
                    key,
                    refused=refusal or HTTPException(422, "invalid input: body"),
                )
            return refusal
    except (HTTPException, DomainError) as refusal:
        return refusal


def _minimum_role(dependant: object) -> Role | None:
    """The highest role any staff check of the route asks for (one each, today)."""
    if dependant is None:
        return None
    found = [getattr(getattr(dependant, "call", None), "minimum_role", None)]
    found += [_minimum_role(sub) for sub in getattr(dependant, "dependencies", ())]
    return max((role for role in found if role is not None), key=lambda r: r.rank, default=None)


Viewer = Annotated[StaffKey, Depends(require_role(Role.viewer))]
Consul = Annotated[StaffKey, Depends(require_role(Role.consul))]
Admin = Annotated[StaffKey, Depends(require_role(Role.admin))]
# scope="function": a refusal in the route reaches the check, which records it.
AdminWithoutSession = Annotated[
    StaffKey, Depends(require_role_without_session(Role.admin), scope="function")
]
