from datetime import UTC, datetime, timedelta
from typing import Any

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[139.0, 35.0], [140.0, 35.0], [140.0, 36.0], [139.0, 36.0], [139.0, 35.0]]],
}


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def advisory_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": {"ko": "도쿄 여행자제", "en": "Tokyo: reconsider travel"},
        "message": {"ko": "불필요한 여행을 자제하십시오.", "en": "Avoid non-essential travel."},
        "level": 2,
        "category": "security",
        "area": {"geometry": SQUARE},
        "expires": in_days(10),
    }
    body.update(overrides)
    return body


def approve(client: Any, advisory_id: str, headers: dict[str, str], *, base: str = "") -> Any:
    """POST …/approve naming what waits at this moment (the API requires the id; the tests of a
    stale id send their own); `client` is a TestClient, or httpx with `base` the service's
    URL. Nothing waiting: id 0, and the API's own 409."""
    read = client.get(f"{base}/v1/advisories/{advisory_id}", headers=headers)
    waiting = (read.json().get("pending") or {}).get("id", 0) if read.status_code == 200 else 0
    return client.post(
        f"{base}/v1/advisories/{advisory_id}/approve",
        json={"proposal_id": waiting},
        headers=headers,
    )
