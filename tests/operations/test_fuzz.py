"""Schemathesis over the whole /openapi.json, in process, on SQLite and PostgreSQL: no server
error, no status code or content type the description does not list, responses as described,
schema-valid requests accepted, and operations that need a key refuse a request without one.
Bounded: each phase runs once (no time budget, which schemathesis would spend fuzzing on and on),
with ANJEON_FUZZ_EXAMPLES examples per operation and a fixed seed unless ANJEON_FUZZ_SEED is set;
in two parts (the advisories' operations, the rest) that CI's legs run side by side."""

import os
import re
import secrets
from collections import Counter
from pathlib import Path

import pytest
import schemathesis

# Imported here, not lazily by from_asgi() deep inside a test: there, a run failed with
# CPython 3.11's "SystemError: AST constructor recursion depth mismatch" while pytest parsed
# this module to rewrite its asserts (schemathesis is a pytest plugin). At collection fewer
# objects are about whose finalizers can run mid-parse.
import schemathesis.specs.openapi.schemas
from schemathesis.engine import StopReason, events, from_schema
from sqlalchemy.orm import Session

from service.geo.geocoding import GeocodedPoint
from service.metrics import RATE_LIMITED
from service.staff import service as staff_service
from tests.conftest import bound_client, make_settings

MAX_EXAMPLES = int(os.environ.get("ANJEON_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("ANJEON_FUZZ_SEED", "20261203"))

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "ignored_auth",
)

# Where the schema cannot say all the service checks, a schema-valid request may still get a 422;
# positive_data_acceptance is off for these operations only, each for the reason given.
SEMANTIC_RULES = {
    "POST /v1/citizens": "a phone number must exist and take SMS, a stay must not have ended yet",
    "PATCH /v1/citizens/{citizen_id}": "the same rules as POST /v1/citizens",
    "POST /v1/advisories": "expires must be after effective and in the future, a special "
    "advisory lasts at most 90 days, a polygon must be valid, subdivision codes must exist",
    "POST /v1/advisories/preview": "the same rules as POST /v1/advisories",
    "PATCH /v1/advisories/{advisory_id}": "the same rules as POST /v1/advisories",
    "POST /v1/staff/keys": "an e-mail address must be one a mail server takes (RFC 5321), which "
    "a JSON schema's string cannot say",
    "POST /v1/advisories/import": "the body is a feed document: its bytes must parse as the "
    "format named, which no JSON schema of a byte string can say",
}


class EveryAddressInSeoul:
    """Stands in for the geocoder, the one outside edge here: every address is found."""

    def geocode(self, address: str) -> GeocodedPoint | None:
        return GeocodedPoint(lat=37.5665, lon=126.978)


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},
            "workers": 1,  # the app's session is the test's, one request at a time
            # NUL bytes too: PostgreSQL refuses them in text, a classic 500.
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "allow-x00": True},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "operations": [
                {"include-name": name, "checks": {"positive_data_acceptance": {"enabled": False}}}
                for name in SEMANTIC_RULES
            ],
        }
    )


# The API in two parts, every operation in one of them, so that two legs share the fuzzing.
ADVISORIES = r"^/v1/advisories"
PARTS = [pytest.param("advisories", id="advisories"), pytest.param("the rest", id="rest")]


@pytest.mark.parametrize("part", PARTS)
def test_fuzz_whole_api(database_url: str, db: Session, tmp_path: Path, part: str) -> None:
    # No feeds: a poll commits in transactions of its own (it fetches outside any), which the
    # test's rollback could not undo, so every poll here is a 404. tests/advisories covers polls.
    (tmp_path / "no-feeds.toml").write_text("")
    settings = make_settings(database_url, feeds_file=str(tmp_path / "no-feeds.toml"))
    # A staff key's 429 is a documented answer: counted here, so that the limit never stands
    # in for the cases (a review found it answering 2,216 of 5,330).
    limited_before = RATE_LIMITED.labels("staff")._value.get()
    with bound_client(settings, db, geocoder=EveryAddressInSeoul()) as client:
        whole = schemathesis.openapi.from_asgi("/openapi.json", client.app, config=_config())
        # Both parts by exclude: include() beside the config's per-operation entries kept
        # every operation (schemathesis 4.32).
        not_advisories = r"^(?!/v1/advisories)"
        schema = whole.exclude(path_regex=not_advisories if part == "advisories" else ADVISORIES)
        mine = {
            op.ok().label
            for op in whole.get_all_operations()
            if bool(re.match(ADVISORIES, op.ok().path)) == (part == "advisories")
        }
        assert mine and {op.ok().label for op in schema.get_all_operations()} == mine

        @schema.auth(refresh_interval=None)
        class LiveAdminKey:
            """An admin key that still works: the fuzzer may revoke the one it holds."""

            key = ""

            def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
                if staff_service.authenticate(db, key=self.key) is None:
                    name = f"fuzz-{secrets.token_hex(4)}"
                    self.key = staff_service.create_key(db, name=name, role="admin").key
                return self.key

            def set(self, case: schemathesis.Case, key: str, ctx: schemathesis.AuthContext) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}

        operations = len(list(schema.get_all_operations()))
        cases: Counter[str] = Counter()  # by phase
        seconds: dict[str, float] = {}
        started = 0.0
        failures: Counter[str] = Counter()
        found: dict[tuple[str, str, str], str] = {}  # (check, operation, title) -> reproduction
        errors: set[str] = set()
        stop = None
        for event in from_schema(schema).execute():
            if isinstance(event, events.PhaseStarted):
                started = event.timestamp
            elif isinstance(event, events.PhaseFinished):
                seconds[event.phase.name.value] = round(event.timestamp - started, 1)
            elif isinstance(event, events.ScenarioFinished):
                cases[event.phase.value] += len(event.recorder.cases)
                for checks in event.recorder.checks.values():
                    for check in checks:
                        if check.failure_info is not None:
                            failures[check.name] += 1
                            title = check.failure_info.failure.title
                            found.setdefault(
                                (check.name, event.recorder.label, title),
                                check.failure_info.code_sample,
                            )
            elif isinstance(event, events.NonFatalError):
                errors.add(
                    f"{event.label}: {event.info.title}: {event.info.message}\n"
                    + _what_went_wrong(event)
                )
            elif isinstance(event, events.FatalError):
                errors.add(repr(event.exception))
            elif isinstance(event, events.EngineFinished):
                stop = event.stop_reason

    print(
        f"\nschemathesis: {operations} operations, {cases.total()} cases {dict(cases)}, "
        f"seconds {seconds}, failures {dict(failures)}"
    )
    report = [f"{check} | {op} | {title}\n    {code}" for (check, op, title), code in found.items()]
    assert not errors and not found, "\n".join([*sorted(errors), *report])
    assert stop == StopReason.COMPLETED, f"stopped early: {stop}"
    assert RATE_LIMITED.labels("staff")._value.get() == limited_before
    assert cases.total() > operations * 3


def _what_went_wrong(event: events.NonFatalError) -> str:
    """The inner exceptions of an engine error (hypothesis' "inconsistent results" wraps the
    first run's failure), its case and the end of its traceback: a flake seen once in a run of
    the suite said only "(1 sub-exception)"."""
    inner = getattr(event.value, "exceptions", ())
    return "\n".join(
        [
            f"  inner: {[repr(e) for e in inner]}",
            f"  case: {event.info.code_sample}",
            *event.info.traceback.splitlines()[-12:],
        ]
    )


# What the fuzzer found, kept as plain tests: ids and offsets beyond 64 bits were 500s (the
# drivers' OverflowError); "²" passed str.isdigit() and then failed int().
TOO_BIG = 2**63


@pytest.mark.parametrize(
    ("role", "method", "url", "field"),
    [
        ("viewer", "get", f"/v1/advisories?offset={TOO_BIG}", "offset"),
        ("consul", "get", f"/v1/alerts?offset={TOO_BIG}", "offset"),
        ("consul", "get", f"/v1/registry/citizens?country=JP&offset={TOO_BIG}", "offset"),
        ("consul", "post", f"/v1/alerts/{TOO_BIG}/retry", "alert_id"),
        ("consul", "post", f"/v1/alerts/{-TOO_BIG - 1}/retry", "alert_id"),
        ("admin", "post", f"/v1/staff/keys/{TOO_BIG}/revoke", "key_id"),
        ("admin", "post", "/v1/staff/keys/0/revoke", "key_id"),
    ],
)
def test_integers_beyond_64_bits_are_invalid_input(client, staff_headers, role, method, url, field):
    response = client.request(method, url, headers=staff_headers(role))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_the_largest_offset_and_ids_are_answered(client, staff_headers):
    largest = TOO_BIG - 1
    consul, admin = staff_headers("consul"), staff_headers("admin")
    for url in ("/v1/advisories", "/v1/alerts", "/v1/registry/citizens?country=JP"):
        joiner = "&" if "?" in url else "?"
        page = client.get(f"{url}{joiner}offset={largest}", headers=consul)
        assert page.status_code == 200, (url, page.text)
        assert page.json()["items"] == []
    assert client.post(f"/v1/alerts/{largest}/retry", headers=consul).status_code == 404
    assert client.post(f"/v1/staff/keys/{largest}/revoke", headers=admin).status_code == 404


@pytest.mark.parametrize("reference", ["²", "²³.abc", "١٢", f"{TOO_BIG}.x", "1" * 40])
def test_a_link_that_is_not_ours_is_not_found(client, reference):
    response = client.get(f"/a/{reference}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_nul_characters_are_refused_not_stored(client, staff_headers):
    """PostgreSQL takes no NUL in text: each of these was a 500 there."""
    admin = staff_headers("admin")
    key = client.post("/v1/staff/keys", json={"name": "a\x00b", "role": "viewer"}, headers=admin)
    assert key.status_code == 422
    assert key.json()["errors"][0]["field"] == "name"
    advisory = {
        "title": {"en": "a\x00b"},
        "message": {"en": "m"},
        "level": 2,
        "category": "other",
        "area": {"countries": ["JP"]},
    }
    issued = client.post("/v1/advisories", json=advisory, headers=admin)
    assert issued.status_code == 422
    assert issued.json()["errors"][0]["field"] == "title.en"
    for url in ("/v1/advisories/a%00b", "/v1/alerts?advisory_id=a%00b", "/v1/citizens/a%00b"):
        response = client.get(url, headers=admin)
        assert response.status_code == 404, (url, response.text)


@pytest.mark.parametrize(
    ("reason", "valid"), [(" vÎ", False), ("  ab  ", False), ("a b", True), ("Wrong area.", True)]
)
def test_a_rejection_reason_the_schema_allows_is_one_the_service_takes(
    database_url, db, staff_headers, reason, valid
):
    """The fuzzer sent " vÎ": three characters by the schema's minLength, two once trimmed, and
    refused. The schema now says what the service checks, both ways."""
    settings = make_settings(database_url, approval="required", approval_min_reach=0)
    with bound_client(settings, db) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Rejection"]
        pattern = schema["properties"]["reason"]["pattern"]
        assert bool(re.search(pattern, reason)) is valid
        advisory = {
            "title": {"en": "Flood"},
            "message": {"en": "Move to higher ground."},
            "level": 3,
            "category": "disaster",
            "area": {"countries": ["JP"]},
        }
        proposed = client.post("/v1/advisories", json=advisory, headers=staff_headers("consul"))
        assert proposed.status_code == 201 and proposed.json()["status"] == "pending_approval"
        rejected = client.post(
            f"/v1/advisories/{proposed.json()['id']}/reject",
            json={"reason": reason},
            headers=staff_headers("admin"),
        )
    assert (rejected.status_code == 200) is valid, rejected.text
    if not valid:
        assert rejected.status_code == 422 and rejected.json()["errors"][0]["field"] == "reason"
