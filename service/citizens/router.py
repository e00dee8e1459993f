from fastapi import APIRouter, Response

from service.auth import BearerToken, SessionDep
from service.citizens import service
from service.citizens.deps import RegistryDep
from service.citizens.schemas import (
    CitizenCreate,
    CitizenRead,
    CitizenUpdate,
    LocationIn,
    Registered,
)
from service.metrics import CITIZENS_REGISTERED

router = APIRouter(prefix="/v1/citizens", tags=["citizens"])


@router.post("", status_code=201, response_model=Registered)
def register(body: CitizenCreate, session: SessionDep, registry: RegistryDep) -> Registered:
    # Geocoding first: the session's write transaction begins at its first statement, after.
    places = service.locate(registry, location=body.location, stays=body.stays)
    citizen, token = service.register_citizen(session, registry=registry, data=body, places=places)
    CITIZENS_REGISTERED.inc()
    return Registered(id=citizen.public_id, manage_token=token, status=citizen.status)


@router.get("/{citizen_id}", response_model=CitizenRead)
def read(
    citizen_id: str, session: SessionDep, registry: RegistryDep, token: BearerToken
) -> CitizenRead:
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    return service.to_read(registry, citizen)


@router.patch("/{citizen_id}", response_model=CitizenRead)
def update(
    citizen_id: str,
    body: CitizenUpdate,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
) -> CitizenRead:
    places = service.locate(registry, stays=body.stays)  # before the write transaction
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    service.update_citizen(session, registry=registry, citizen=citizen, data=body, places=places)
    return service.to_read(registry, citizen)


@router.put("/{citizen_id}/location", response_model=CitizenRead)
def move(
    citizen_id: str,
    body: LocationIn,
    session: SessionDep,
    registry: RegistryDep,
    token: BearerToken,
) -> CitizenRead:
    places = service.locate(registry, location=body)  # before the write transaction
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    service.move_citizen(session, citizen=citizen, places=places)
    return service.to_read(registry, citizen)


@router.delete("/{citizen_id}", status_code=204)
def erase(citizen_id: str, session: SessionDep, token: BearerToken) -> Response:
    citizen = service.find_citizen(session, public_id=citizen_id, token=token)
    service.erase_citizen(session, citizen=citizen)
    return Response(status_code=204)
