"""/v1/citizens: registration, verification of contacts, and the citizen's own record (with
the manage token). Codes go out after the request's transaction has committed."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from service.auth import BearerToken, SessionDep, client_of, in_transaction
from service.citizens import messages, proof, service
from service.citizens.deps import RegistryDep
from service.citizens.schemas import (
    CitizenCreate,
    CitizenRead,
    CitizenUpdate,
    LocationIn,
    Registered,
    ResendIn,
    VerifyIn,
    place_warnings,
)
from service.citizens.service import Registry
from service.db import flush_write_ahead_log, read_first, utcnow
from service.errors import InvalidInput, NotFound
from service.metrics import CITIZENS_REGISTERED
from service.problems import problem_response
from service.rate_limits import RateLimits, Rule

router = APIRouter(prefix="/v1/citizens", tags=["citizens"])


async def _limits(request: Request) -> RateLimits:
    # async: a sync dependency would take a thread of anyio\'s pool to read one attribute
    return request.app.state.rate_limits


LimitsDep = Annotated[RateLimits, Depends(_limits)]


def _send_later(request: Request, tasks: BackgroundTasks, outgoing: service.Outgoing) -> None:
    """Codes and notices leave after the commit, outside any transaction."""
    if not (outgoing.codes or outgoing.notices):
        return
    tasks.add_task(
        messages.deliver,
        request.app.state.dispatcher.notifiers,
        request.app.state.rate_limits,
        settings=request.app.state.settings,
        codes=outgoing.codes,
        notices=outgoing.notices,
    )


def _verified_at_once(request: Request) -> bool:
    return request.app.state.settings.verification == "off"


@router.post("", status_code=201, response_model=Registered)
async def register(
    request: Request,
    body: CitizenCreate,
    registry: RegistryDep,
    limits: LimitsDep,
    tasks: BackgroundTasks,
) -> Registered:
    """Register, then verify each contact with the 6-digit code sent to it. The answer is the
    same whether or not a contact is registered elsewhere. Past the address's limit, a solved
    proof of work (GET /v1/citizens/proof) in X-Anjeon-Proof admits it all the same."""

    def in_thread(session: Session) -> Registered:
        with proof.registration_admitted(limits, _presented(request, registry)) as proven:
            # Geocoding first: the session's write transaction begins at its first statement.
            lookups = limits.address_lookups(client_of(request))
            checked = service.check_registration(registry, body, lookups=lookups)
        done = service.register_citizen(
            session,
            registry=registry,
            data=body,
            checked=checked,
            verified=_verified_at_once(request),
            shares=service.unverified_shares(limits, client_of(request), proven=proven),
        )
        CITIZENS_REGISTERED.inc()
        outgoing = service.codes_to_send(
            session,
            limits,
            done.outgoing,
            countries=request.app.state.settings.code_countries,
            client=client_of(request),
            proven=proven,
        )
        _send_later(request, tasks, outgoing)
        return Registered(
            id=done.citizen.public_id,
            manage_token=done.token,
            status=service.public_status(done.citizen),
            warnings=place_warnings(checked.places.current, checked.places.stays or []),
        )

    return await in_transaction(request, in_thread)  # one thread hand-off, not four


@router.get("/proof")
async def proof_challenge(request: Request, registry: RegistryDep) -> JSONResponse:
    """A proof-of-work challenge (ALTCHA, SHA-256): its solution, in X-Anjeon-Proof, admits one
    registration past the address's limit. It expires in 10 minutes."""
    max_number = request.app.state.settings.registration_proof_max_number
    if not max_number:
        raise NotFound("no proof of work is taken here (ANJEON_REGISTRATION_PROOF_MAX_NUMBER=0)")
    challenge = proof.new_challenge(registry.vault.proof_key, max_number=max_number, now=utcnow())
    return JSONResponse(challenge, headers={"Cache-Control": "no-store"})


@router.post("/{citizen_id}/verify", response_model=CitizenRead)
async def verify(
    citizen_id: str,
    body: VerifyIn,
    registry: RegistryDep,
    token: BearerToken,
    limits: LimitsDep,
    tasks: BackgroundTasks,
    request: Request,
) -> CitizenRead | JSONResponse:
    """The code sent to a contact: right, the channel is alerted from now on; wrong, 422 naming
    `code` (5 wrong tries void it). Tries at one contact are limited whichever record makes
    them (429)."""

    def in_thread(session: Session) -> CitizenRead | JSONResponse:
        citizen = service.find_citizen(session, public_id=citizen_id, token=token)
        checked = service.verify_contact(
            session,
            registry=registry,
            limits=limits,
            citizen=citizen,
            channel=body.channel,
            code=body.code,
        )
        if not checked.verified:
            # Returned, not raised: the request still commits, so the wrong try counts.
            return problem_response(
                422,
                "Invalid input",
                f"code: {checked.problem}",
                slug="validation-error",
                errors=[{"field": "code", "message": checked.problem}],
            )
        _send_later(request, tasks, service.Outgoing(codes=[], notices=list(checked.notices)))
        return service.to_read(registry, citizen, session)

    return await in_transaction(request, in_thread)  # one thread hand-off, not four


@router.post("/{citizen_id}/verify/resend", status_code=202)
def resend(
    citizen_id: str,
    body: ResendIn,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
    limits: LimitsDep,
    tasks: BackgroundTasks,
    request: Request,
) -> dict[str, str]:
    """A new code for a contact still waiting (the old code stops working). Rate-limited; past
    the address's limit, a solved proof of work in X-Anjeon-Proof admits it (as a
    registration)."""
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    # The contact first (422 for a channel not waiting: no limit spent); then the limits (a
    # 429 changes nothing); then the contact's own, everyone's: past it nothing is renewed.
    # Answered the same whether a number's codes are spent by others, or it said STOP.
    message = service.waiting_contact(
        session, registry=registry, citizen=citizen, channel=body.channel
    )
    proven = proof.admit_new_code(limits, _presented(request, registry), citizen.id, message)
    if not service.contact_takes_a_resend(session, limits, citizen=citizen, contact=message):
        return {"status": "sent"}
    renewed = service.resend_code(session, registry=registry, citizen=citizen, contact=message)
    if not proven:
        service.count_as_unverified(session, limits, renewed, client=client_of(request))
    if service.hold_if_stopped(session, renewed):
        return {"status": "sent"}
    _send_later(request, tasks, service.Outgoing(codes=[renewed], notices=[]))
    return {"status": "sent"}


@router.get("/{citizen_id}", response_model=CitizenRead)
def read(
    citizen_id: str,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
) -> CitizenRead:
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    return service.to_read(registry, citizen, session)


@router.patch("/{citizen_id}", response_model=CitizenRead)
def update(
    citizen_id: str,
    body: CitizenUpdate,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
    limits: LimitsDep,
    tasks: BackgroundTasks,
    request: Request,
) -> CitizenRead:
    """Change what the body gives; a new phone or e-mail is alerted once verified. A change of
    contact sends a code, and is rate-limited as a resend is (429)."""
    with read_first(session):  # a stranger's addresses are not geocoded
        service.check_manage_token(session, public_id=citizen_id, token=token)
    # Before the write transaction; an ended stay is checked against the stored ones later.
    # A change by address is counted once found good: one refused (422) spends nothing, but
    # counts against the address's refused changes, past which none is looked at.
    client = client_of(request)
    limits.refused_change_room(client, citizen_id)
    lookups = limits.address_lookups(client, citizen_id=citizen_id)
    try:
        places = service.check_change(registry, body, lookups=lookups)
        # Each change is a write and a matching: one record's token made 269 in 4 s (a probe),
        # holding SQLite's one write lock. Counted once the token and the change are found good;
        # in this process while the storage is away, so that a traveller can still say where
        # they are (a change of contact still waits for it: its code's limits fail closed).
        limits.take_here_when_away(Rule.CHANGE, citizen_id)
        citizen = service.find_citizen(session, public_id=citizen_id, token=token)
        outgoing = service.update_citizen(
            session,
            registry=registry,
            citizen=citizen,
            data=body,
            places=places,
            verified=_verified_at_once(request),
        )
    except InvalidInput:
        limits.count_refused_change(client, citizen_id)
        raise
    # Taken once the change is found good: a change refused (422) spends nothing; a refusal
    # here (429) rolls the change back with the request's transaction.
    # A change of contact sends a code: limited as a resend, so that one manage token cannot
    # send codes to any number of numbers as fast as it asks. A change that sends none (the
    # number it had) spends nothing.
    proven = bool(outgoing.codes) and proof.admit_new_code(
        limits, _presented(request, registry), citizen.id
    )
    outgoing = service.codes_to_send(
        session,
        limits,
        outgoing,
        countries=request.app.state.settings.code_countries,
        client=client_of(request),
        proven=proven,
    )
    _send_later(request, tasks, outgoing)
    return service.to_read(registry, citizen, session)


def _presented(request: Request, registry: Registry) -> proof.Presented:
    return proof.Presented(
        client=client_of(request),
        payload=request.headers.get(proof.PROOF_HEADER),
        key=registry.vault.proof_key,
        max_number=request.app.state.settings.registration_proof_max_number,
        previous_keys=tuple(registry.vault.proof_keys[1:]),
    )


@router.put("/{citizen_id}/location", response_model=CitizenRead)
def move(
    citizen_id: str,
    body: LocationIn,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
    limits: LimitsDep,
    request: Request,
) -> CitizenRead:
    with read_first(session):  # a stranger's address is not geocoded
        service.check_manage_token(session, public_id=citizen_id, token=token)
    client = client_of(request)
    limits.refused_change_room(client, citizen_id)  # as PATCH: refusals counted together
    lookups = limits.address_lookups(client, citizen_id=citizen_id)
    try:
        places = service.locate(registry, location=body, lookups=lookups)  # before the write
    except InvalidInput:
        limits.count_refused_change(client, citizen_id)
        raise
    limits.take_here_when_away(Rule.CHANGE, citizen_id)  # as PATCH: one count for both
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    service.move_citizen(session, citizen=citizen, places=places)
    return service.to_read(registry, citizen, session)


@router.delete("/{citizen_id}", status_code=204)
def erase(
    citizen_id: str,
    session: SessionDep,
    token: BearerToken,
    request: Request,
    tasks: BackgroundTasks,
) -> Response:
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    service.erase_citizen(session, citizen=citizen)
    # After the commit: SQLite's log still holds the record's pages from before.
    tasks.add_task(flush_write_ahead_log, request.app.state.engine)
    return Response(status_code=204)
