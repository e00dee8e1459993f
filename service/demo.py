"""Sample citizens for trying the service out (`anjeon demo`). Numbers are fictional."""

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.citizens.contact import normalise_phone
from service.citizens.models import Citizen
from service.citizens.schemas import CitizenCreate
from service.citizens.service import Registry, register_citizen
from service.citizens.verification import contact_hash
from service.db import utcnow

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
                # No quiet hours: a newcomer trying it at night still sees level 1-2 alerts.
                "quiet_hours": None,
                "stays": [
                    {
                        "country": "JP",
                        "from": str(today + timedelta(days=30)),
                        "to": str(today + timedelta(days=37)),
                    }
                ],
            }
        )
        if _already_there(session, registry, phone, email):
            continue
        # Demo contacts are fictional: marked verified explicitly, so that a newcomer sees
        # alerts on the console without typing codes.
        citizen = register_citizen(session, registry=registry, data=data, verified=True).citizen
        created.append((name, citizen.public_id))
    return created


def _already_there(
    session: Session, registry: Registry, phone: str | None, email: str | None
) -> bool:
    """A sample loaded by an earlier `anjeon demo` (its verified contact is on a record)."""
    hashes = []
    if phone:
        e164 = normalise_phone(phone, default_region=registry.phone_region)
        hashes.append(Citizen.phone_hash == contact_hash(registry.vault, "sms", e164))
    if email:
        hashes.append(Citizen.email_hash == contact_hash(registry.vault, "email", email))
    return session.scalar(select(Citizen.id).where(or_(*hashes)).limit(1)) is not None
