"""The OpenAPI description: who may call what, every error a problem, the bodies routes read
themselves, "exactly one of" in the schema, examples that work, and docs pages without a CDN."""

import re

import jsonschema_rs
import pytest

from service import openapi
from service.citizens.schemas import LocationIn, StayIn

PROBLEM = "application/problem+json"


def _operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(m, path, op) for path, ops in spec["paths"].items() for m, op in ops.items()]


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_security_schemes_follow_the_routes_dependencies(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes[openapi.STAFF_SCHEME]["scheme"] == "bearer"
    assert schemes[openapi.CITIZEN_SCHEME]["scheme"] == "bearer"
    security = {(m, p): op.get("security") for m, p, op in _operations(spec)}
    staff = [{openapi.STAFF_SCHEME: []}]
    citizen = [{openapi.CITIZEN_SCHEME: []}]
    public = ("/healthz", "/readyz", "/metrics", "/v1/webhooks/")
    for (method, path), needed in security.items():
        anyones = (("post", "/v1/citizens"), ("get", "/v1/citizens/proof"))
        if path.startswith(public) or (method, path) in anyones:
            assert needed is None, (method, path)
        elif path.startswith("/v1/citizens/") and not path.endswith("/reveal"):
            assert needed == citizen, (method, path)
        else:
            assert needed == staff, (method, path)
    assert "**admin**" in spec["paths"]["/v1/staff/keys"]["post"]["description"]


def test_every_error_is_a_problem_with_the_statuses_auth_and_ids_bring(spec):
    for method, path, op in _operations(spec):
        responses = op["responses"]
        for status, response in responses.items():
            if int(status) >= 400:
                assert list(response["content"]) == [PROBLEM], (method, path, status)
        if "security" in op:
            assert "401" in responses, (method, path)
            assert "503" in responses, (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in op:
            assert "413" in responses, (method, path)
        if "application/json" in op.get("requestBody", {}).get("content", {}):
            assert "422" in responses, (method, path)
    # Past the address's limit a proof admits a registration, a resend, a change of contact.
    for method, path in [
        ("post", "/v1/citizens"),
        ("post", "/v1/citizens/{citizen_id}/verify/resend"),
        ("patch", "/v1/citizens/{citizen_id}"),
    ]:
        operation = spec["paths"][path][method]
        assert "Retry-After" in operation["responses"]["429"]["headers"], path
        assert "X-Anjeon-Proof" in operation["responses"]["429"]["description"], path
        headers = [(p["name"], p["in"]) for p in operation["parameters"] if p["in"] == "header"]
        assert headers == [("X-Anjeon-Proof", "header")], path
    # Every staff route answers 429 past the key's own limit; a public read never does.
    assert (
        "ANJEON_RATE_LIMIT_STAFF"
        in (spec["paths"]["/v1/advisories"]["get"]["responses"]["429"]["description"])
    )
    assert "429" not in spec["paths"]["/healthz"]["get"]["responses"]
    staff_me = spec["paths"]["/v1/staff/me"]["get"]["responses"]
    assert "403" not in staff_me  # every key is at least a viewer
    assert "403" in spec["paths"]["/v1/staff/keys"]["post"]["responses"]
    citizens = spec["paths"]["/v1/citizens/{citizen_id}"]["get"]["responses"]
    assert "403" not in citizens
    validation = spec["paths"]["/v1/advisories"]["get"]["responses"]["422"]
    assert validation["content"][PROBLEM]["schema"]["$ref"].endswith("/ValidationProblem")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_a_validation_problem_is_what_the_service_sends(client, spec, staff_headers):
    response = client.get("/v1/advisories?limit=0", headers=staff_headers("viewer"))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/ValidationProblem", "components": spec["components"]}
    )
    validator.validate(response.json())
    assert response.json()["errors"][0]["field"] == "limit"


def test_the_tables_name_operations_that_exist(spec):
    described = {(m, p) for m, p, _ in _operations(spec)}
    for table in (
        openapi._RAISED,
        openapi._READ_BY_HAND,
        openapi._ALSO_SUCCEEDS,
        openapi._MEDIA_TYPES,
        openapi._DOCUMENT_PROBLEMS,
    ):
        assert set(table) <= described, set(table) - described


def test_import_takes_a_file_of_each_format(spec):
    body = spec["paths"]["/v1/advisories/import"]["post"]["requestBody"]
    assert set(body["content"]) == {
        "application/cap+xml",
        "application/geo+json",
        "application/rss+xml",
        "application/json",
        "application/octet-stream",
    }
    for media in body["content"].values():
        assert media["schema"] == {"type": "string", "format": "binary"}
    responses = spec["paths"]["/v1/advisories/import"]["post"]["responses"]
    assert {"200", "201", "400", "422"} <= set(responses)


@pytest.mark.parametrize(
    ("location", "valid"),
    [
        ({"lat": 35.6, "lon": 139.7}, True),
        ({"address": "Shibuya, Tokyo"}, True),
        ({"country": "JP"}, True),
        ({"lat": 35.6}, False),
        ({"lat": 35.6, "lon": 139.7, "country": "JP"}, False),
        ({"lat": 35.6, "country": "JP"}, False),
        ({"address": "Shibuya, Tokyo", "country": "JP"}, False),
        ({}, False),
    ],
)
def test_location_is_exactly_one_of_three_forms_in_schema_and_model(spec, location, valid):
    components = spec["components"]
    schemas = {name: components["schemas"][name] for name in ("LocationIn", "StayIn")}
    assert [b["title"] for b in schemas["LocationIn"]["oneOf"]] == ["Point", "Address", "Country"]
    stay = {**location, "from": "2099-01-01", "to": "2099-01-02"}
    for name, model, value in (("LocationIn", LocationIn, location), ("StayIn", StayIn, stay)):
        validator = jsonschema_rs.validator_for(
            {"$ref": f"#/components/schemas/{name}", "components": components}
        )
        assert validator.is_valid(value) is valid, (name, value)
        try:
            model.model_validate(value)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted is valid, (name, value)


def test_the_request_examples_are_accepted(client, spec, staff_headers):
    schemas = spec["components"]["schemas"]
    consul = staff_headers("consul")
    (citizen,) = schemas["CitizenCreate"]["examples"]
    registered = client.post("/v1/citizens", json=citizen)
    assert registered.status_code == 201, registered.text
    token = {"Authorization": f"Bearer {registered.json()['manage_token']}"}
    (change,) = schemas["CitizenUpdate"]["examples"]
    changed = client.patch(f"/v1/citizens/{registered.json()['id']}", json=change, headers=token)
    assert changed.status_code == 200, changed.text
    (advisory,) = schemas["AdvisoryCreate"]["examples"]
    issued = client.post("/v1/advisories", json=advisory, headers=consul)
    assert issued.status_code == 201, issued.text
    (revision,) = schemas["AdvisoryUpdate"]["examples"]
    revised = client.patch(f"/v1/advisories/{issued.json()['id']}", json=revision, headers=consul)
    assert revised.status_code == 200, revised.text
    (key,) = schemas["StaffKeyCreate"]["examples"]
    created = client.post("/v1/staff/keys", json=key, headers=staff_headers("admin"))
    assert created.status_code == 201, created.text
    media = spec["paths"]["/v1/advisories/import"]["post"]["requestBody"]["content"]
    imported = client.post(
        "/v1/advisories/import",
        content=media["application/cap+xml"]["example"],
        headers={**consul, "Content-Type": "application/cap+xml"},
    )
    assert imported.status_code == 201, imported.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_service(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    # No other site frames it (a probe framed both).
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assert assets
    assert not re.search(r"https?://", response.text), "the page names another host"
    for asset in assets:
        assert asset.startswith("/static/docs/"), asset
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 500, asset
    assert "/openapi.json" in response.text


def test_the_bursts_endpoints_say_their_503_is_the_database(spec):
    """They take their session through in_transaction, not SessionDep: the schema still says
    what a 503 of theirs means (review finding)."""
    for method, path in [
        ("post", "/v1/citizens"),
        ("post", "/v1/citizens/{citizen_id}/verify"),
        ("post", "/v1/webhooks/twilio/inbound"),
        ("post", "/v1/webhooks/{notifier}/status"),
    ]:
        described = spec["paths"][path][method]["responses"]["503"]["description"]
        assert described.startswith("The database is unavailable"), (path, described)
    assert spec["paths"]["/v1/citizens/proof"]["get"]["responses"]["503"]["description"] == (
        "No answer within the request deadline; retry later."
    )
