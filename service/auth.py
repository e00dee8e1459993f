"""Request-scoped dependencies: the database session, staff roles, citizens' manage tokens."""

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from service.db import READ_ONLY
from service.staff import service as staff_service
from service.staff.models import Role, StaffKey

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


_READS = {"GET", "HEAD", "OPTIONS"}
# GETs that write: opening an alert's link records when it was opened.
_WRITING_GETS = ("/a/",)


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    with request.app.state.session_factory.begin() as session:
        if request.method in _READS and not request.url.path.startswith(_WRITING_GETS):
            session.connection(execution_options={READ_ONLY: True})
        yield session


# scope="function": commit before the response leaves, so a 201 means the data is stored.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers=_CHALLENGE)
    return token.strip()


BearerToken = Annotated[str, Depends(bearer_token)]


def require_role(minimum: Role) -> Callable[..., StaffKey]:
    """A dependency admitting staff keys of `minimum` role or above."""

    def check(session: SessionDep, token: BearerToken) -> StaffKey:
        key = staff_service.authenticate(session, key=token)
        if key is None:
            raise HTTPException(401, "unknown or revoked staff key", headers=_CHALLENGE)
        if Role(key.role).rank < minimum.rank:
            raise HTTPException(403, f"this needs the {minimum} role; the key has {key.role}")
        return key

    return check


Viewer = Annotated[StaffKey, Depends(require_role(Role.viewer))]
Consul = Annotated[StaffKey, Depends(require_role(Role.consul))]
Admin = Annotated[StaffKey, Depends(require_role(Role.admin))]
