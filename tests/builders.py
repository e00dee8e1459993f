"""Small builders for request bodies and registrations."""

from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient

_counter = iter(range(10_000_000))


def unique_mobile() -> str:
    """A distinct valid Korean mobile number, written the way Koreans write it; each in
    another block of 10,000 numbers than the last (one address may have only a few codes
    sent to one block: ANJEON_RATE_LIMIT_PREFIX_CLIENT)."""
    n = next(_counter)
    return f"010-{3000 + n % 7000:04d}-{n // 7000:04d}"


def citizen_body(**overrides: Any) -> dict[str, Any]:
    n = next(_counter)
    body: dict[str, Any] = {
        "name": "김지수",
        "phone": unique_mobile(),
        "email": f"jisu{n}@example.com",
        "language": "ko",
        "channels": ["sms", "email"],
        "consent": True,
        "location": {"lat": 37.5665, "lon": 126.9780},
        "stays": [],
        # Alerts go whatever the hour the suite runs at; tests/dispatch/test_quiet_hours*.py
        # hold them under a frozen clock.
        "quiet_hours": None,
    }
    body.update(overrides)
    return body


def stay(days_from_now: int = 10, length: int = 7, **where: Any) -> dict[str, Any]:
    start = date.today() + timedelta(days=days_from_now)
    place = where or {"country": "JP"}
    return {**place, "from": start.isoformat(), "to": (start + timedelta(days=length)).isoformat()}


def register(client: TestClient, **overrides: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Register a citizen; returns (id, auth headers, the body sent)."""
    body = citizen_body(**overrides)
    response = client.post("/v1/citizens", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return data["id"], {"Authorization": f"Bearer {data['manage_token']}"}, body
