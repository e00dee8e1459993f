"""Health, readiness, metrics and the problem format of errors nobody planned for."""

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.audit.models import AuditEntry
from service.logs import JsonFormatter
from tests.builders import citizen_body
from tests.conftest import make_settings


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_the_schema_head(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["schema"] == client.app.state.schema_head


def test_readyz_is_503_when_the_database_is_unreachable():
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "unreachable" in response.json()["detail"]


def test_writes_while_the_database_is_down_are_503_to_retry():
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/v1/citizens", json=citizen_body())
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["title"] == "Service unavailable"


def test_readyz_is_503_when_the_schema_is_behind(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with TestClient(create_app(make_settings(url))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "anjeon migrate" in response.json()["detail"]


def test_metrics_count_requests_by_route(client):
    client.get("/healthz")
    client.get("/v1/citizens/some-id")
    body = client.get("/metrics").text
    assert 'anjeon_http_requests_total{method="GET",route="/healthz",status="200"}' in body
    assert 'route="/v1/citizens/{citizen_id}",status="401"' in body
    assert "some-id" not in body


def test_unknown_route_and_method_are_problems(client):
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = client.put("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["title"] == "Method Not Allowed"


def test_head_is_get_without_the_body(client):
    """A load balancer's or an uptime monitor's HEAD was a 405 on every route."""
    for path in ("/healthz", "/readyz", "/register", "/console/", "/register/assets/register.js"):
        got, head = client.get(path), client.head(path)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"" and got.content, path
        assert head.headers["content-length"] == got.headers["content-length"], path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/v1/citizens").status_code == 405  # POST only: no GET to stand for
    # Counted under its route and as HEAD (a copy of the scope left every HEAD "unmatched").
    metrics = client.get("/metrics").text
    assert 'anjeon_http_requests_total{method="HEAD",route="/healthz",status="200"}' in metrics


def test_a_staff_head_request_is_audited_as_head(client, db, staff_headers):
    headers = staff_headers("viewer")
    assert client.head("/v1/advisories", headers=headers).status_code == 200
    assert client.head("/v1/advisories", headers={}).status_code == 401
    actions = db.scalars(
        select(AuditEntry.action).where(AuditEntry.action.like("% /v1/advisories"))
    )
    assert actions.all() == ["HEAD /v1/advisories"]


def test_a_trailing_slash_redirect_never_names_the_requests_host(client):
    """Starlette's redirect wrote the Host header into Location: anyone could make our answer
    point at their host, and a cache that keys on the path would hand it to everyone."""
    headers = {"Host": "evil.example"}
    for path, location in [
        ("/v1/citizens/?lang=ko", "/v1/citizens?lang=ko"),
        ("/register/", "/register"),
        ("/healthz/", "/healthz"),
    ]:
        answer = client.get(path, headers=headers, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (307, location), path
    for path in (
        "//evil.example/",
        "/no-such-page/",
        f"/c/{'A' * 60_000}/",
        f"/c/{'😀' * 200}/",  # 2,400 characters once encoded
        f"/v1/citizens/?x={'A' * 60_000}",
    ):
        answer = client.get(path, headers=headers, follow_redirects=False)
        assert answer.status_code == 404 and "location" not in answer.headers, path
    followed = client.post("/v1/citizens/", json={}, follow_redirects=True)
    assert followed.status_code == 422  # 307 keeps the method and the body


def test_a_trailing_slash_redirect_keeps_the_root_path_once_and_the_query_as_sent(client):
    """Behind a proxy that mounts the service under a prefix, scope["path"] holds it already;
    raw bytes in a query (a client that does not encode them) are encoded as they came."""

    async def redirect(path: str, root_path: str, query: bytes) -> str | None:
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": root_path,
            "query_string": query,
            "headers": [(b"host", b"evil.example")],
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
        }
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await client.app(scope, receive, send)
        assert sent[0]["status"] == 307, sent[0]
        return dict(sent[0]["headers"]).get(b"location", b"").decode()

    def run(*args: object) -> str | None:
        # In a thread of its own: once a browser test has started Playwright's sync API in this
        # process, the main thread counts as running its event loop, and anyio.run refuses.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(anyio.run, redirect, *args).result()

    assert run("/anjeon/healthz/", "/anjeon", b"") == "/anjeon/healthz"
    assert run("/healthz/", "", "q=한".encode()) == "/healthz?q=%ED%95%9C"
    assert run("/healthz/", "", b"a=%2F") == "/healthz?a=%2F"


def test_a_crash_is_a_500_problem_without_internals(client, caplog):
    def broken():
        raise RuntimeError("secret internals")

    client.app.add_api_route("/boom", broken)
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


def test_json_log_lines_carry_extra_fields():
    record = logging.makeLogRecord({"msg": "request", "levelname": "INFO", "route": "/healthz"})
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "request" and line["route"] == "/healthz" and line["level"] == "info"


def test_responses_carry_a_request_id(client):
    assert len(client.get("/healthz").headers["x-request-id"]) == 16
