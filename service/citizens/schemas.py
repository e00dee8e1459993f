"""Request and response bodies of /v1/citizens. Unknown fields are refused (no mass assignment)."""

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from service.config import MAX_STAYS_CEILING
from service.geo import countries
from service.schema_rules import (
    NAME_PATTERN,
    StrictModel,
    check_name,
    not_null,
    nulls_refused,
)

Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, strict=True)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, strict=True)]
Channel = Literal["sms", "email"]
Language = Literal["ko", "en"]


_FORMS = (("Point", ("lat", "lon")), ("Address", ("address",)), ("Country", ("country",)))


def _exactly_one_form(schema: dict[str, Any]) -> None:
    """State in the JSON schema what _one_form checks: one form of location, nothing else
    beside it but the model's other fields (a stay's dates)."""
    properties = schema.pop("properties")
    required = schema.pop("required", [])
    schema.pop("additionalProperties", None)
    in_forms = {name for _, names in _FORMS for name in names}
    shared = {k: v for k, v in properties.items() if k not in in_forms}
    schema["oneOf"] = [
        {
            "title": title,
            "type": "object",
            "properties": {**{n: not_null(properties[n]) for n in names}, **shared},
            "required": [*names, *required],
            "additionalProperties": False,
        }
        for title, names in _FORMS
    ]


def country_codes(schema: dict[str, Any]) -> None:
    """JSON schema extra: the country codes service.geo.countries knows."""
    schema["enum"] = sorted(countries.known_codes())


CountryCode = Annotated[
    str,
    Field(
        min_length=2,
        max_length=2,
        description="ISO 3166-1 alpha-2 (lower case is accepted too).",
        json_schema_extra=country_codes,
    ),
]


class LocationIn(StrictModel):
    """Exactly one of: lat and lon; address; country (ISO 3166-1 alpha-2)."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_form)

    lat: Latitude | None = None
    lon: Longitude | None = None
    address: Annotated[str, Field(min_length=3, max_length=300)] | None = None
    country: CountryCode | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "LocationIn":
        has_point = self.lat is not None or self.lon is not None
        forms = sum([has_point, self.address is not None, self.country is not None])
        if forms != 1:
            raise ValueError("give exactly one of: lat and lon, address, country")
        if has_point and (self.lat is None or self.lon is None):
            raise ValueError("lat and lon go together")
        return self


class StayIn(LocationIn):
    starts_on: date = Field(alias="from")
    ends_on: date = Field(alias="to")

    @field_validator("ends_on")
    @classmethod
    def _window(cls, ends_on: date, info: ValidationInfo) -> date:
        starts_on = info.data.get("starts_on")
        if starts_on is None:
            return ends_on
        if ends_on < starts_on:
            raise ValueError("'to' is before 'from'")
        if ends_on > _years_after(starts_on, 2):
            raise ValueError("a stay can be at most 2 years long")
        return ends_on


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


HHMM = Annotated[
    str,
    Field(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time HH:MM, 00:00 to 23:59.",
        examples=["22:00"],
    ),
]


class QuietHours(StrictModel):
    """Level 1-2 alerts wait from `from` until `to` (which may be the next morning), in the
    local time of where the citizen is (of the current place and a trip under way, the one
    written last). Levels 3, 4, special, CAP Immediate or Extreme alerts and check-ins go at
    once."""

    model_config = ConfigDict(
        populate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{"from": "22:00", "to": "07:00"}]},
    )

    starts: HHMM = Field(alias="from")
    ends: HHMM = Field(alias="to")

    @field_validator("ends")
    @classmethod
    def _not_empty(cls, ends: str, info: ValidationInfo) -> str:
        if info.data.get("starts") == ends:
            raise ValueError("'to' equals 'from': an empty window; give null for no quiet hours")
        return ends


DEFAULT_QUIET_HOURS = QuietHours.model_validate({"from": "22:00", "to": "07:00"})
_QUIET_HOURS = (
    "Quiet hours in the local time of where the citizen is (of the current place and a trip "
    'under way, the one written last): {"from": "22:00", "to": "07:00"} unless given; null: '
    "none."
)


Name = Annotated[
    str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": NAME_PATTERN})
]
# The registry refuses more than ANJEON_MAX_STAYS (service.locate); the schema states the most
# that setting may allow.
Stays = Annotated[
    list[StayIn],
    Field(
        max_length=MAX_STAYS_CEILING,
        description="At most ANJEON_MAX_STAYS stays (20 unless configured; 100 at most).",
    ),
]
Channels = Annotated[
    list[Channel], Field(min_length=1, max_length=2, json_schema_extra={"uniqueItems": True})
]


_EXERCISES = (
    "true: also receive drills (exercise advisories), each message marked [훈련] / [EXERCISE]. "
    "Real advisories reach everyone either way."
)


def _unique_channels(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("each channel at most once")
    return value


class CitizenCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "김지수",
                    "phone": "010-1234-5678",
                    "email": "jisu@example.com",
                    "language": "ko",
                    "channels": ["sms", "email"],
                    "consent": True,
                    "location": {"lat": 35.6895, "lon": 139.6917},
                    "stays": [{"country": "TH", "from": "2099-03-01", "to": "2099-03-10"}],
                }
            ]
        }
    )

    name: Name
    phone: Annotated[str, Field(max_length=40)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    language: Language
    channels: Channels
    consent: StrictBool
    location: LocationIn
    stays: Stays = []
    quiet_hours: QuietHours | None = Field(default=DEFAULT_QUIET_HOURS, description=_QUIET_HOURS)
    exercises: StrictBool = Field(default=False, description=_EXERCISES)

    _name = field_validator("name")(check_name)
    _channels = field_validator("channels")(_unique_channels)

    @field_validator("consent")
    @classmethod
    def _consented(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError("registration needs consent: true (we store contact details)")
        return value


class CitizenUpdate(StrictModel):
    """Only the fields given change; phone or email null removes it."""

    model_config = ConfigDict(
        json_schema_extra=nulls_refused(
            "name",
            "language",
            "channels",
            "stays",
            "exercises",
            examples=[{"language": "en", "email": None, "channels": ["sms"]}],
        )
    )

    name: Name | None = None
    phone: Annotated[str, Field(max_length=40)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    language: Language | None = None
    channels: Channels | None = None
    stays: Stays | None = None
    quiet_hours: QuietHours | None = Field(
        default=None, description="Left out: unchanged; null: no quiet hours."
    )
    exercises: StrictBool | None = Field(default=None, description=_EXERCISES)

    _name = field_validator("name")(check_name)
    _channels = field_validator("channels")(_unique_channels)

    @field_validator("name", "language", "channels", "stays", "exercises", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null (leave the field out to keep it)")
        return value


class PlaceWarning(BaseModel):
    """Something to know about a place that was stored all the same."""

    field: str = Field(
        description='The place in the request body: "location" or "stays[i]".',
        examples=["location"],
    )
    code: Literal["outside-territorial-waters"] = Field(
        description="outside-territorial-waters: the point is more than 12 nautical miles "
        "(22.224 km) from every country's coast, so it has no country or province."
    )
    message: str


_OUTSIDE_WATERS = (
    "this point is more than 12 nautical miles (22.2 km) from every country's coast, so it is "
    "in no country or province: advisories for a country or province will not reach it, only "
    "advisories drawn as a polygon or circle around it"
)
_WARNINGS = (
    "Places stored with a caveat; empty when there is none. A point out at sea beyond every "
    "country's 12-nautical-mile territorial sea gets 'outside-territorial-waters': only "
    "polygon and circle advisories reach it."
)


class _Place(Protocol):
    lat: float | None
    country: str | None


def place_warnings(location: _Place | None, stays: Sequence[_Place]) -> list[PlaceWarning]:
    """Warnings for a citizen's stored places (a point that got no country is at sea)."""
    places = [("location", location), *((f"stays[{i}]", s) for i, s in enumerate(stays))]
    return [
        PlaceWarning(field=field, code="outside-territorial-waters", message=_OUTSIDE_WATERS)
        for field, place in places
        if place is not None and place.lat is not None and place.country is None
    ]


class VerifyIn(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"channel": "sms", "code": "123456"}]}
    )

    channel: Channel
    code: Annotated[str, Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")]


class ResendIn(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"channel": "sms"}]})

    channel: Channel


class Registered(BaseModel):
    id: str
    manage_token: str
    status: str = Field(
        description='"pending" until a contact is verified with the code sent to it; '
        '"active" at once when verification is off.'
    )
    warnings: list[PlaceWarning] = Field(default_factory=list, description=_WARNINGS)


class PlaceRead(BaseModel):
    lat: float | None
    lon: float | None
    country: str | None
    source: str


class StayRead(PlaceRead):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    starts_on: date = Field(serialization_alias="from")
    ends_on: date = Field(serialization_alias="to")


class CitizenRead(BaseModel):
    id: str
    status: str = Field(description='"pending" until one contact is verified, then "active".')
    verified: list[Channel] = Field(description="Channels whose contact is verified: alerted.")
    pending: list[Channel] = Field(description="Channels whose contact waits for its code.")
    name: str
    phone: str | None
    email: str | None
    language: str
    channels: list[str]
    location: PlaceRead | None
    stays: list[StayRead]
    quiet_hours: QuietHours | None = Field(description=_QUIET_HOURS)
    exercises: bool = Field(description=_EXERCISES)
    sms_opted_out: bool = Field(
        description="The phone replied STOP: no SMS go to it until it replies START. A new "
        "phone number starts opted in."
    )
    created_at: datetime
    updated_at: datetime

    @computed_field(description=_WARNINGS)  # type: ignore[prop-decorator]
    @property
    def warnings(self) -> list[PlaceWarning]:
        return place_warnings(self.location, self.stays)
