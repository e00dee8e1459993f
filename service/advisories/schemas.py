"""Request and response bodies of /v1/advisories."""

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from service.dispatch.content import has_non_latin_letters
from service.schema_rules import (
    NAME_PATTERN,
    REASON3_PATTERN,
    TEXT_PATTERN,
    StrictModel,
    UtcTime,
    check_name,
    given,
    nulls_refused,
    refuse_nul,
    refuse_unshown,
)

Level = Literal[1, 2, 3, 4, "special"]
Category = Literal["security", "disaster", "health", "other"]


Text = Annotated[
    str,
    Field(min_length=1, max_length=5000, json_schema_extra={"pattern": TEXT_PATTERN}),
    AfterValidator(refuse_nul),
]


class LocalizedText(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={"anyOf": given(("ko", "en"), {"type": "string", "minLength": 1})}
    )

    ko: Text | None = None
    en: Text | None = None

    @model_validator(mode="after")
    def _one_language(self) -> "LocalizedText":
        if self.ko is None and self.en is None:
            raise ValueError("give at least one of ko, en")
        return self

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("ko", self.ko), ("en", self.en)) if v is not None}


# Names the area inside a sentence: one line, by the rules a person's name follows.
AreaWords = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": NAME_PATTERN}),
    AfterValidator(check_name),
]


class AreaName(LocalizedText):
    """What people call the area, per language (at most 200 characters each)."""

    ko: AreaWords | None = None
    en: AreaWords | None = None

    @field_validator("en")
    @classmethod
    def _readable_in_english(cls, words: str | None) -> str | None:
        # An English alert never shows such words (it would describe the shapes instead).
        if words is not None and has_non_latin_letters(words):
            raise ValueError("letters of a non-Latin script: the Korean name goes in ko")
        return words


class CircleIn(StrictModel):
    lat: float
    lon: float
    radius_km: float


class AreaIn(StrictModel):
    """The union of its parts; geometry is checked by service.geo.areas for precise errors."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                *given(("countries", "subdivisions", "circles"), {"minItems": 1}),
                *given(("geometry",), {"type": "object"}),
            ],
            "examples": [
                {"countries": ["TH"]},
                {"circles": [{"lat": 35.68, "lon": 139.69, "radius_km": 50}]},
                {
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[100, 13], [101, 13], [101, 14], [100, 14], [100, 13]]],
                    }
                },
            ],
        }
    )

    countries: Annotated[list[str], Field(max_length=250)] = []
    subdivisions: Annotated[list[str], Field(max_length=500)] = []
    geometry: dict[str, Any] | None = None
    circles: Annotated[list[CircleIn], Field(max_length=100)] = []
    name: AreaName | None = Field(
        None,
        description='The words every alert shows for the area, e.g. {"ko": "방콕 도심", "en": '
        '"central Bangkok"}; with one language, every reader gets it, except that an English '
        "alert never shows Korean words. Without a name an alert describes the area's parts: "
        'its countries, its circles ("20 km around 35.68, 139.69"), provinces by code, "the '
        'marked area" for a drawn shape. A PATCH of the area that leaves name out keeps it; '
        "null removes it. An en name in a non-Latin script is refused.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> "AreaIn":
        if not (self.countries or self.subdivisions or self.geometry is not None or self.circles):
            raise ValueError("give at least one of countries, subdivisions, geometry, circles")
        return self


class AdvisoryCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": {"ko": "방콕 시위", "en": "Protests in Bangkok"},
                    "message": {"en": "Avoid the government district; follow local news."},
                    "level": 3,
                    "category": "security",
                    "area": {"circles": [{"lat": 13.75, "lon": 100.5, "radius_km": 30}]},
                    "expires": "2099-01-31T00:00:00Z",
                }
            ]
        }
    )

    title: LocalizedText
    message: LocalizedText
    level: Level
    category: Category
    area: AreaIn
    effective: UtcTime | None = None
    expires: UtcTime | None = None
    draft: bool = Field(
        False,
        description="true: stored as a draft (editable, previewable, never sent) until "
        "POST /v1/advisories/{id}/submit.",
    )
    exercise: bool = Field(
        False,
        description="true: a drill, sent only to citizens who opted in to exercises, every "
        "message marked [훈련] / [EXERCISE].",
    )


class AdvisoryUpdate(StrictModel):
    # Null means nothing for these (leave a field out to keep it); `expires` null: no end.
    model_config = ConfigDict(
        json_schema_extra=nulls_refused(
            "title", "message", "level", "category", "area", "effective", examples=[{"level": 4}]
        )
    )

    title: LocalizedText | None = None
    message: LocalizedText | None = None
    level: Level | None = None
    category: Category | None = None
    area: AreaIn | None = None
    effective: UtcTime | None = None
    expires: UtcTime | None = Field(
        None, description="null: the advisory has no end (a special advisory must have one)"
    )

    @field_validator("title", "message", "level", "category", "area", "effective", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null (leave the field out to keep it)")
        return value


class Rejection(StrictModel):
    reason: str = Field(
        min_length=3,
        max_length=500,
        description="Why: told to the proposer (3-500 characters, trimmed).",
        json_schema_extra={"pattern": REASON3_PATTERN},
    )

    _reason = field_validator("reason")(refuse_nul)
    _shown = field_validator("reason")(refuse_unshown)


class Approval(StrictModel):
    proposal_id: int = Field(
        description="The `pending.id` read (required: nothing else says which words the "
        "approver read): a proposal replaced or superseded since is a 409."
    )


def level_out(level: object) -> object:
    """A level as the API shows it: 1-4 as numbers, "special" (stored as text)."""
    return int(level) if isinstance(level, str) and level.isdigit() else level


def _content_out(content: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot with its level as an advisory's own `level` shows it (3, not "3")."""
    return {**content, "level": level_out(content["level"])} if "level" in content else content


class ProposalRead(BaseModel):
    """A new advisory or a revision waiting for a second person."""

    id: int = Field(description="Name it when approving: what was read is what is approved.")
    kind: Literal["issue", "revise"]
    proposed_by: str
    proposed_at: datetime
    content: dict[str, Any] = Field(description="What the advisory would say once approved.")

    @field_validator("content")
    @classmethod
    def _level_as_shown(cls, content: dict[str, Any]) -> dict[str, Any]:
        return _content_out(content)


class AdvisoryRead(BaseModel):
    id: str
    revision: int
    status: Literal["draft", "pending_approval", "rejected", "active", "expired", "cancelled"]
    source: str
    issued_by: str
    alerts_citizens: bool
    exercise: bool = False
    pending: ProposalRead | None = Field(
        None,
        description="Waiting for approval: the advisory's first issue (status "
        "pending_approval) or a revision (the revision in force stays until it is approved).",
    )
    rejected_reason: str | None = None
    level: Level
    category: str
    title: dict[str, str]
    message: dict[str, str]
    area: dict[str, Any]
    effective: datetime
    expires: datetime | None
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None


class RevisionRead(BaseModel):
    revision: int
    change: str
    changed_by: str
    created_at: datetime
    content: dict[str, Any]

    @field_validator("content")
    @classmethod
    def _level_as_shown(cls, content: dict[str, Any]) -> dict[str, Any]:
        return _content_out(content)


class SmsCost(BaseModel):
    segments: dict[str, int] = Field(
        description="SMS segments of the text a citizen of each language gets (the cost of one)."
    )
    messages: int = Field(
        description="SMS the send would cost: each SMS recipient's segments in their language "
        "(numbers that answered STOP are not sent to and not counted)."
    )


class Preview(BaseModel):
    """Whom an advisory would reach and what its SMS would cost; nothing is stored."""

    citizens: int
    by_channel: dict[str, int]
    by_language: dict[str, int] = Field(description="Reached citizens by their language.")
    by_country: dict[str, int] = Field(
        description="Reached citizens by the country of the place that matched (most first)."
    )
    sms: SmsCost


class TestSendRequest(StrictModel):
    """Exactly one staff contact to send the test to."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["phone"]}, {"required": ["email"]}],
            "examples": [{"phone": "010-1234-5678", "language": "ko"}],
        }
    )

    phone: str | None = Field(None, max_length=32, description="A mobile number that takes SMS.")
    email: str | None = Field(None, max_length=254)
    language: Literal["ko", "en"] = "ko"


class TestSendRead(BaseModel):
    """What was sent, marked [TEST]; no alert row was made and no citizen was told."""

    channel: Literal["sms", "email"]
    to: str = Field(description="The destination, masked.")
    language: str = Field(
        description="The language rendered: the advisory's other one when it has no text in the "
        "language asked for."
    )
    subject: str | None
    text: str
    segments: int | None = Field(description="SMS segments; null for an e-mail.")
    outcome: str = Field(description='"sent", or why the provider did not take it.')


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    total: int
    limit: int
    offset: int
    items: list[T]


class MatchedPlaceRead(BaseModel):
    """The place that reached the citizen: their current location, or a stay with its dates."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    kind: Literal["current", "stay"]
    country: str | None
    lat: float | None = Field(description="Rounded to 0.01° (about 1 km); null: a country only.")
    lon: float | None
    starts_on: date | None = Field(serialization_alias="from")
    ends_on: date | None = Field(serialization_alias="to")


class MatchRead(BaseModel):
    citizen_id: str
    language: str
    channels: list[str]
    phone: str | None
    email: str | None
    place: Literal["current", "stay"] = Field(
        description="What reached them: where they are now, or a stay."
    )
    country: str | None = Field(description="The country of the place that reached them.")
    matched: MatchedPlaceRead | None


class ImportResult(BaseModel):
    created: list[str]
    updated: list[str]
    skipped: list[dict[str, str]]
    rejected: list[dict[str, str]]
    advisories: list[AdvisoryRead]
