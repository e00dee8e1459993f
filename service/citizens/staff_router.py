"""Staff views of the registry (aggregate counts; masked listings for consuls), and the reveal
of one citizen's contacts, recorded with its reason. `router` holds both path prefixes, so
the app includes one router."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.auth import Consul, SessionDep, Viewer, client_of, record_action
from service.citizens import overview
from service.citizens.deps import RegistryDep
from service.citizens.schemas import StrictModel, country_codes
from service.db import MAX_BIGINT, utcnow
from service.errors import InvalidInput, TooManyRequests
from service.geo import countries
from service.privacy import scrub_contacts
from service.problems import problem_response
from service.rate_limits import Rule
from service.schema_rules import REASON_PATTERN, refuse_nul, refuse_unshown

on_registry = APIRouter(prefix="/v1/registry", tags=["registry"])
# Staff operations on one citizen live under the citizen's own path (DESIGN's contract).
on_citizen = APIRouter(prefix="/v1/citizens", tags=["registry"])


class MaskedPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[overview.MaskedCitizen]


class RevealIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"reason": "No answer to the level 3 alert for Tokyo; calling to check."}]
        }
    )

    reason: str = Field(
        min_length=10,
        max_length=500,
        description="Why you need this citizen's contacts (10-500 characters, trimmed); kept "
        "in the audit log for good, with any phone number or e-mail address in it replaced by "
        "[contact] and the person's name by [name]: still, do not name them.",
        json_schema_extra={"pattern": REASON_PATTERN},
    )

    _reason = field_validator("reason")(refuse_nul)
    _shown = field_validator("reason")(refuse_unshown)

    @field_validator("reason")
    @classmethod
    def _no_contacts(cls, reason: str) -> str:
        # The audit log is append-only and outlives the citizen's erasure: a reason that
        # quoted "+82 10 …" kept the number in clear for good (found by a privacy review).
        return scrub_contacts(reason) or reason


@on_registry.get("/counts")
def counts(session: SessionDep, _staff: Viewer) -> dict[str, int]:
    return overview.count_by_country(session)


@on_registry.get("/citizens", response_model=MaskedPage)
def citizens(
    session: SessionDep,
    registry: RegistryDep,
    _staff: Consul,
    country: Annotated[str, Query(json_schema_extra=country_codes)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_BIGINT)] = 0,
) -> MaskedPage:
    code = countries.normalise_code(country)
    if code is None:
        raise InvalidInput("country", "not an ISO 3166-1 alpha-2 country code")
    total, items = overview.citizens_in_country(
        session, registry=registry, country=code, limit=limit, offset=offset
    )
    return MaskedPage(total=total, limit=limit, offset=offset, items=items)


@on_citizen.post("/{citizen_id}/reveal", response_model=overview.Revealed)
def reveal(
    citizen_id: str,
    body: RevealIn,
    request: Request,
    session: SessionDep,
    registry: RegistryDep,
    staff: Consul,
) -> overview.Revealed | JSONResponse:
    """The citizen's full name, contacts (verified, or marked as waiting for their code),
    language and current place, to reach someone who has not answered. The reason is kept in
    the audit log with who asked (GET /v1/audit). A few dozen an hour per staff key."""
    try:
        return overview.reveal_citizen(
            session,
            registry=registry,
            public_id=citizen_id,
            reason=body.reason,
            actor=staff.name,
            role=staff.role,
            client=client_of(request),
            now=utcnow(),
            # Counted once found (an unknown id or a bad reason costs nothing).
            before_reading=lambda: request.app.state.rate_limits.take_here_when_away(
                Rule.REVEAL, staff.name
            ),
        )
    except TooManyRequests as refused:
        # Returned, not raised: nothing was revealed, and the request commits so that the
        # log keeps the refused attempt and its reason (a probe's went unrecorded).
        record_action(
            session,
            request,
            staff,
            action="refused reveal citizen",
            subject=citizen_id,
            reason=f"429: {refused.detail}; their reason: "
            + overview.reason_to_keep(
                session, registry=registry, public_id=citizen_id, reason=body.reason
            ),
            status=429,
        )
        return problem_response(
            429,
            refused.title,
            refused.detail,
            slug=refused.slug,
            headers={"Retry-After": str(refused.retry_after_s)},
        )


router = APIRouter()
router.include_router(on_registry)
router.include_router(on_citizen)
