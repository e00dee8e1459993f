from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.schema_rules import NAME_PATTERN, check_name
from service.staff.models import Role


class StaffKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"name": "Seoul desk", "role": "consul"}]},
    )

    name: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": NAME_PATTERN})
    role: Role
    email: str | None = Field(
        None,
        max_length=254,
        description="Where the key's holder hears what became of what they proposed "
        "(approved, rejected).",
    )
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=400,
        description="Days the key admits its holder; at most, and by default, the service's "
        "staff_key_life_days (90 unless the operator set it).",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        # A key's name is who proposed and who approved, in the audit log and on the console:
        # nothing in it may make it display as another's, nor draw nothing at all (a review
        # made RLO + "bob" and a Hangul filler alone); one read as another key's is refused
        # where the keys are (staff.service.create_key).
        return check_name(name)


class StaffKeyReissue(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"key_prefix": "ajs_Ab3dE_", "expires_in_days": 30}]},
    )

    key_prefix: str = Field(
        min_length=1,
        max_length=16,
        description="The `key_prefix` of the secret this replaces (GET /v1/staff/keys): a "
        "reissue made meanwhile by someone else is a 409, not a second secret of which only "
        "the last works.",
    )
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=400,
        description="Days the new secret admits its holder; by default the term the key was "
        "last issued for; at most the service's staff_key_life_days.",
    )


class StaffKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime
    expires_soon: bool = Field(
        description="Within 14 days of `expires_at`, or past it: time an admin reissues it."
    )
    contact_email: str | None = None


class StaffKeyIssued(StaffKeyRead):
    key: str
