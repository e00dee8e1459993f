"""The OpenAPI description tools can use, and /docs and /redoc served from vendored assets.

FastAPI's own description misses what our routes enforce through dependencies and handlers:
who may call (bearer keys) and the problem+json errors. Those are derived here from each route's
dependencies and parameters, so a new route is described without a new line; what nothing on the
route shows (a 409 deep in a service, a body the route reads itself) is in the tables below."""

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.auth import Viewer, bearer_token, get_session, in_transaction
from service.problems import PROBLEM_MEDIA_TYPE
from service.rate_limits import RateLimits
from service.staff.models import Role

STATIC_DIR = Path(__file__).parent / "static"
_ASSETS = "/static/docs"

STAFF_SCHEME = "staffKey"
CITIZEN_SCHEME = "manageToken"
_SECURITY_SCHEMES = {
    STAFF_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "A staff key (`ajs_…`) from `anjeon staff create-key`; roles are "
        "viewer < consul < admin, and each operation names the least it needs.",
    },
    CITIZEN_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "The citizen's manage token (`ajc_…`), shown once by POST /v1/citizens.",
    },
}

_PROVEN_429 = (
    "A rate limit refused the {what}; `Retry-After` says when to retry. Past the address's "
    "limit, `proof` names a challenge whose solution, sent in `X-Anjeon-Proof`, admits it all "
    "the same."
)
_PROOF_HEADER = {
    "name": "X-Anjeon-Proof",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 2048},
    "description": "Past the address's limit: the solution of a challenge from GET "
    "/v1/citizens/proof, as base64 of JSON `{algorithm, challenge, number, salt, signature}` "
    "(ALTCHA). Each admits one request.",
}

# Statuses a service raises that no dependency or parameter reveals.
_RAISED: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/staff/keys"): {
        409: "A staff key with this name exists.",
        422: "The e-mail address is not one a mail server takes, or `expires_in_days` is past "
        "the service's staff_key_life_days.",
    },
    ("post", "/v1/staff/keys/{key_id}/reissue"): {
        409: "The key is revoked (a revoked key stays revoked: create a new one under another "
        "name), or its secret is no longer the one `key_prefix` names (reissued meanwhile).",
        422: "Invalid input, or `expires_in_days` is past the service's staff_key_life_days.",
    },
    ("post", "/v1/advisories/{advisory_id}/approve"): {
        403: "The key that proposed it cannot approve it.",
        404: "No advisory with this id.",
        409: "Nothing of this advisory waits for approval, or what waits is not the proposal "
        "named (replaced or proposed anew since it was read).",
        422: "No `proposal_id`, or the advisory's content no longer holds (it ended while it "
        "waited).",
    },
    ("post", "/v1/advisories/{advisory_id}/reject"): {
        403: "The key that proposed it cannot decide on it (cancel it instead).",
        404: "No advisory with this id.",
        409: "Nothing of this advisory waits for approval.",
    },
    ("post", "/v1/advisories/{advisory_id}/submit"): {
        404: "No advisory with this id.",
        409: "The advisory is not a draft.",
        422: "The draft breaks a rule of every advisory (`errors` names each).",
    },
    ("patch", "/v1/advisories/{advisory_id}"): {
        409: "The advisory is cancelled or expired (issue a new one), or it waits for approval "
        "of something another key proposed."
    },
    ("post", "/v1/alerts/{alert_id}/retry"): {
        409: "The alert is not failed, or its citizen has erased their record."
    },
    ("get", "/v1/alerts"): {404: "No advisory with this `advisory_id`."},
    ("post", "/v1/advisories/import"): {
        400: "The document cannot be read (not well-formed, or in an encoding it cannot be "
        "decoded from).",
        422: "Nothing in the document could be used (`errors` names each rejected item), or it "
        "is not the format it was sent as, or no format was named.",
    },
    ("post", "/v1/webhooks/{notifier}/status"): {
        403: "No notifier of this name takes delivery reports, or the report is not genuine "
        "(Twilio: a missing or wrong `X-Twilio-Signature`).",
        404: "The report names no alert.",
    },
    ("post", "/v1/webhooks/twilio/inbound"): {
        403: "The SMS notifier is not twilio, or the message is not genuine (a missing or wrong "
        "`X-Twilio-Signature`)."
    },
    ("get", "/v1/advisories/{advisory_id}/rollcall"): {404: "No advisory with this id."},
    ("post", "/v1/advisories/{advisory_id}/rollcall"): {
        404: "No advisory with this id.",
        409: "The advisory is cancelled.",
        429: "A round was started less than 10 minutes ago (Retry-After says when).",
    },
    ("post", "/v1/advisories/{advisory_id}/rollcall/{citizen_id}/take"): {
        404: "No advisory with this id, or no answer from this citizen to it.",
        409: "Another consul has this citizen (named), or their answer is not help.",
    },
    ("delete", "/v1/advisories/{advisory_id}/rollcall/{citizen_id}/take"): {
        404: "No advisory with this id, or no answer from this citizen to it.",
        409: "Another consul has this citizen: only they or an admin can give it back.",
    },
    ("post", "/v1/advisories/{advisory_id}/preview"): {404: "No advisory with this id."},
    ("post", "/v1/advisories/{advisory_id}/test-send"): {
        404: "No advisory with this id.",
        409: "The advisory is cancelled.",
        422: "Not exactly one of `phone` and `email`, or one that is not valid (a number that "
        "cannot take SMS): `errors` names it.",
        429: "This staff key sent too many test sends; `Retry-After` says when to retry.",
    },
    ("get", "/readyz"): {503: "The database is unreachable or its schema is not at head."},
    ("get", "/v1/citizens/proof"): {
        404: "No proof of work is taken here (`ANJEON_REGISTRATION_PROOF_MAX_NUMBER` is 0)."
    },
    ("post", "/v1/citizens"): {429: _PROVEN_429.format(what="registration")},
    ("post", "/v1/citizens/{citizen_id}/verify/resend"): {429: _PROVEN_429.format(what="resend")},
    ("patch", "/v1/citizens/{citizen_id}"): {
        429: _PROVEN_429.format(what="change of phone or e-mail")
    },
}

_BINARY = {"type": "string", "format": "binary"}
_CAP_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>example-tokyo-1</identifier>
  <sender>desk@example.org</sender>
  <sent>2026-12-01T09:00:00+09:00</sent>
  <status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
  <info>
    <language>en-US</language><category>Geo</category><event>Earthquake</event>
    <urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>
    <expires>2099-12-31T23:59:59+09:00</expires>
    <headline>Strong earthquake near Tokyo (example)</headline>
    <description>Expect aftershocks.</description>
    <area><areaDesc>50 km around central Tokyo</areaDesc><circle>35.68,139.69 50</circle></area>
  </info>
</alert>
"""

# 422s whose problem may carry no `errors`: a whole document of the wrong format.
_DOCUMENT_PROBLEMS = {("post", "/v1/advisories/import")}

# Bodies and headers the routes read themselves, so FastAPI cannot see them.
_READ_BY_HAND: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/citizens"): {"parameters": [_PROOF_HEADER]},
    ("post", "/v1/citizens/{citizen_id}/verify/resend"): {"parameters": [_PROOF_HEADER]},
    ("patch", "/v1/citizens/{citizen_id}"): {"parameters": [_PROOF_HEADER]},
    ("post", "/v1/advisories/import"): {
        "requestBody": {
            "required": True,
            "description": "A feed document. The content type names its format (charset "
            "parameters are ignored); `?format=` overrides it, so any file can be sent as "
            "`application/octet-stream`.",
            "content": {
                "application/cap+xml": {"schema": _BINARY, "example": _CAP_EXAMPLE},
                "application/geo+json": {"schema": _BINARY},
                "application/rss+xml": {"schema": _BINARY},
                "application/json": {"schema": _BINARY},
                "application/octet-stream": {"schema": _BINARY},
            },
        },
    },
    ("post", "/v1/webhooks/{notifier}/status"): {
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": f"The {name} of the send, as put in the callback URL.",
            }
            for name in ("alert", "attempt")
        ]
        + [
            {
                "name": "X-Twilio-Signature",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Twilio's HMAC of the URL and form, keyed by the auth token.",
            }
        ],
        "requestBody": {
            "required": False,
            "description": "The provider's form (Twilio: MessageSid, MessageStatus, ErrorCode).",
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            },
        },
    },
}

# A second success status a route chooses itself: (status, (like which, description)).
_ALSO_SUCCEEDS: dict[tuple[str, str], dict[str, tuple[str, str]]] = {
    ("post", "/v1/advisories/import"): {
        "200": ("201", "Everything in the document was known already; nothing is sent again.")
    },
}

# Responses that are not JSON.
_MEDIA_TYPES: dict[tuple[str, str], dict[str, str]] = {
    ("get", "/metrics"): {"200": "text/plain"},
}

_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:anjeon:problem:not-found"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
    },
}
_VALIDATION_PROBLEM = {
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "required": ["errors"],
            "properties": {"errors": {"minItems": 1}},
        },
    ],
    "examples": [
        {
            "type": "urn:anjeon:problem:validation-error",
            "title": "Invalid input",
            "status": 422,
            "detail": "location.lat: Input should be less than or equal to 90",
            "errors": [
                {"field": "location.lat", "message": "Input should be less than or equal to 90"}
            ],
        }
    ],
}
_FIELD_ERROR = {
    "type": "object",
    "required": ["field", "message"],
    "properties": {
        "field": {"type": "string", "description": "JSON path of the field, as `stays[0].to`."},
        "message": {"type": "string"},
    },
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
_CHALLENGE = {"WWW-Authenticate": {"schema": {"type": "string"}}}


def install_api_docs(app: FastAPI) -> None:
    """Describe the API at /openapi.json; serve /docs and /redoc without any CDN. In
    production /docs and /redoc are off and /openapi.json needs a staff key: the description
    maps every endpoint for whoever reads it."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if app.openapi_url is None:

        @app.get("/openapi.json", include_in_schema=False)
        def staff_description(_staff: Viewer) -> JSONResponse:
            return JSONResponse(app.openapi())

        return
    app.mount(_ASSETS, StaticFiles(directory=STATIC_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{_ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{_ASSETS}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{_ASSETS}/swagger-ui/favicon-32x32.png",
            # No spec validator badge: it would send the description to swagger.io. Keys are
            # not persisted (persistAuthorization would keep them in the browser's storage).
            swagger_ui_parameters={"validatorUrl": None},
        )
        # No other site may frame it (its "Authorize" takes a staff key): a probe framed it.
        page.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        page.headers["X-Frame-Options"] = "DENY"
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{_ASSETS}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{_ASSETS}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
        # Redoc's bundle shows Redocly's logo from cdn.redoc.ly: the browser may ask nothing
        # of another host (a newcomer's browser tried, on a network with no way out).
        page.headers["Content-Security-Policy"] = _REDOC_POLICY
        page.headers["X-Frame-Options"] = "DENY"
        return page


# Redoc renders with inline styles and parses the description in a blob: worker.
_REDOC_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; worker-src 'self' blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'"
)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = describe(app, FastAPI.openapi(app))
    return app.openapi_schema


def describe(app: FastAPI, spec: dict[str, Any]) -> dict[str, Any]:
    """Add security, problem responses and hand-read bodies to FastAPI's description."""
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(Problem=_PROBLEM, ValidationProblem=_VALIDATION_PROBLEM, FieldError=_FIELD_ERROR)
    components["securitySchemes"] = _SECURITY_SCHEMES
    for route in _api_routes(app):
        for method in route.methods:
            operation = spec["paths"][route.path_format].get(method.lower())
            if operation is not None:
                _describe_operation(route, method.lower(), operation)
    return spec


def _api_routes(app: FastAPI) -> Iterator[APIRoute]:
    # FastAPI 0.16x includes routers lazily; iter_route_contexts flattens them (with prefixes).
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in flatten(app.routes) if flatten else app.routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and route.include_in_schema:
            yield route


def _describe_operation(route: APIRoute, method: str, operation: dict[str, Any]) -> None:
    key = (method, route.path_format)
    calls = set(_calls(route.dependant))
    role = next((r for r in map(_role_of, calls) if r is not None), None)
    problems: dict[int, str] = {}
    if role is not None:
        operation["security"] = [{STAFF_SCHEME: []}]
        problems[401] = (
            "No staff key, or one that is unknown or revoked, or one past its `expires_at` "
            '(`WWW-Authenticate: Bearer error="invalid_token"`).'
        )
        if role != Role.viewer:
            problems[403] = f"The staff key's role is below {role}."
        problems[429] = (
            "This staff key made too many requests (`ANJEON_RATE_LIMIT_STAFF`), or a rate "
            "limit of the route's own refused it; `Retry-After` says when to retry."
        )
        note = f"Needs a staff key of role **{role}** or above."
        operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
    elif bearer_token in calls:
        operation["security"] = [{CITIZEN_SCHEME: []}]
        problems[401] = "No bearer token."
    parameters = operation.get("parameters", [])
    if any(p["in"] == "path" for p in parameters):
        problems[404] = (
            "No citizen with this id for this token: a wrong token looks the same, so ids "
            "cannot be probed."
            if "security" in operation and role is None
            else "Nothing with this id."
        )
    # Only what FastAPI validates can fail validation; hand-read parts say so in _RAISED.
    if "requestBody" in operation or any(_can_be_invalid(p) for p in parameters):
        problems[422] = "Invalid input: `errors` names each field and what is wrong with it."
    if any(_returns(call, RateLimits) for call in calls) and 429 not in problems:
        problems[429] = "A rate limit refused the request; `Retry-After` says when to retry."
    if get_session in calls or role is not None or _in_transaction(route):
        problems[503] = "The database is unavailable; nothing was changed. Retry later."
    else:  # any request answers 503 at its deadline (ANJEON_REQUEST_TIMEOUT_S)
        problems[503] = "No answer within the request deadline; retry later."

    hand_read = _READ_BY_HAND.get(key, {})
    operation["parameters"] = parameters + hand_read.get("parameters", [])
    if not operation["parameters"]:
        del operation["parameters"]
    if "requestBody" in hand_read:
        operation["requestBody"] = hand_read["requestBody"]
    if "requestBody" in operation:
        problems[413] = "The body is larger than the configured limit."
    raised = _RAISED.get(key, {})
    if role is not None and 429 in raised:
        raised = {**raised, 429: f"{raised[429]} Or the key made too many requests in all."}
    problems.update(raised)

    responses = operation["responses"]
    responses.pop("422", None)  # FastAPI's, in a shape we never send
    for status, media_type in _MEDIA_TYPES.get(key, {}).items():
        responses[status]["content"] = {media_type: {"schema": {"type": "string"}}}
    for status, (like, description) in _ALSO_SUCCEEDS.get(key, {}).items():
        responses[status] = {**responses[like], "description": description}
    for status in sorted(problems):
        responses[str(status)] = _problem_response(
            status, problems[status], fields=key not in _DOCUMENT_PROBLEMS
        )


def _problem_response(status: int, description: str, *, fields: bool) -> dict[str, Any]:
    name = "ValidationProblem" if status == 422 and fields else "Problem"
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }
    if status == 401:
        response["headers"] = _CHALLENGE
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _can_be_invalid(parameter: dict[str, Any]) -> bool:
    """A path string of any form is accepted, then looked up: only its 404 can happen."""
    schema = parameter.get("schema", {})
    constrained = set(schema) - {"type", "title", "description"}
    return parameter["in"] != "path" or schema.get("type") != "string" or bool(constrained)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _in_transaction(route: APIRoute) -> bool:
    # The burst's async endpoints take their session through in_transaction, not a dependency.
    code = getattr(route.endpoint, "__code__", None)
    return code is not None and in_transaction.__name__ in code.co_names


def _returns(call: Callable[..., Any], kind: type) -> bool:
    try:
        return inspect.signature(call, eval_str=True).return_annotation is kind
    except (TypeError, ValueError, NameError):  # no signature to read
        return False


def _role_of(call: Callable[..., Any]) -> Role | None:
    """The least role a staff check admits: the `minimum` of the require_role* of service.auth
    that made it."""
    try:
        minimum = inspect.getclosurevars(call).nonlocals.get("minimum")
    except TypeError:  # a class or a builtin: not a staff check
        return None
    return minimum if isinstance(minimum, Role) else None
