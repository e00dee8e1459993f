"""Sample citizens for trying the service out (`anjeon demo`). Numbers are fictional."""

from datetime import timedelta

from sqlalchemy.orm import Session

from service.citizens.schemas import CitizenCreate
from service.citizens.service import Registry, register_citizen
from service.db import utcnow
from service.errors import Conflict

_SAMPLES = [
    ("김민준", "010-2000-0001", None, "ko", ["sms"], {"lat": 35.6895, "lon": 139.6917}),
    (
        "이서연",
        "010-2000-0002",
        "seoyeon@example.com",
        "ko",
        ["sms", "email"],
        {"lat": 13.7563, "lon": 100.5018},
    ),
    ("Park Jiho", None, "jiho.park@example.com", "en", ["email"], {"lat": 48.8566, "lon": 2.3522}),
    ("최유진", "010-2000-0004", None, "ko", ["sms"], {"country": "VN"}),
    (
        "정하준",
        "010-2000-0005",
        "hajun@example.com",
        "ko",
        ["email"],
        {"lat": 40.7128, "lon": -74.0060},
    ),
]


def load_demo_citizens(session: Session, *, registry: Registry) -> list[tuple[str, str]]:
    """Register the samples not yet present; returns (name, citizen id) for those created."""
    created = []
    today = utcnow().date()
    for name, phone, email, language, channels, location in _SAMPLES:
        data = CitizenCreate.model_validate(
            {
                "name": name,
                "phone": phone,
                "email": email,
                "language": language,
                "channels": channels,
                "consent": True,
                "location": location,
                "stays": [
                    {
                        "country": "JP",
                        "from": str(today + timedelta(days=30)),
                        "to": str(today + timedelta(days=37)),
                    }
                ],
            }
        )
        try:
            with session.begin_nested():
                citizen, _token = register_citizen(session, registry=registry, data=data)
        except Conflict:
            continue
        created.append((name, citizen.public_id))
    return created
