"""Staff views of the registry (aggregate counts; masked listings for consuls)."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from service.auth import Consul, SessionDep, Viewer
from service.citizens import overview
from service.citizens.deps import RegistryDep
from service.citizens.schemas import country_codes
from service.db import MAX_BIGINT
from service.errors import InvalidInput
from service.geo import countries

router = APIRouter(prefix="/v1/registry", tags=["registry"])


class MaskedPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[overview.MaskedCitizen]


@router.get("/counts")
def counts(session: SessionDep, _staff: Viewer) -> dict[str, int]:
    return overview.count_by_country(session)


@router.get("/citizens", response_model=MaskedPage)
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
