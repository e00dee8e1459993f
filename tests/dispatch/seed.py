"""A committed database full of pending alerts, for tests that run the dispatcher as a
separate process: citizens with sealed contacts, one advisory, and its ledger rows."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.advisories.models import Advisory, AdvisoryRevision
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.ledger.enqueue import insert_alerts
from service.migrate import upgrade
from service.privacy import PersonalDataVault


def phone_of(n: int) -> str:
    return f"+8210{n:08d}"


def email_of(n: int) -> str:
    return f"c{n}@example.com"


@contextmanager
def scratch_database(database_url: str, tmp_path, name: str) -> Iterator[str]:
    """A new, migrated database on the same backend, dropped afterwards."""
    if make_url(database_url).get_backend_name() == "sqlite":
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        upgrade(url)
        yield url
        return
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    database = f"{make_url(database_url).database}_{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = make_url(database_url).set(database=database).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def seeded_advisory(now: datetime) -> Advisory:
    """A level 3 advisory over Japan with its first revision, not yet added to a session."""
    advisory = Advisory(
        public_id=str(uuid.uuid4()),
        source="manual",
        issued_by="crash-test",
        level="3",
        category="security",
        title_ko="시험 경보",
        message_ko="시험 메시지입니다.",
        area={"countries": ["JP"]},
        effective=now,
        expires=now + timedelta(days=1),
    )
    advisory.revisions.append(
        AdvisoryRevision(
            revision=1,
            content={
                "level": "3",
                "category": "security",
                "title": {"ko": "시험 경보"},
                "message": {"ko": "시험 메시지입니다."},
                "area": {"countries": ["JP"]},
                "effective": now.isoformat(),
                "expires": (now + timedelta(days=1)).isoformat(),
            },
            changed_by="crash-test",
            change="issued",
        )
    )
    return advisory


def seed_pending(url: str, *, citizens: int, secret: bytes) -> None:
    """`citizens` people with both channels, each owed one SMS and one e-mail."""
    vault = PersonalDataVault(secret)
    engine = make_engine(url)
    now = utcnow()
    with make_session_factory(engine).begin() as session:
        advisory = seeded_advisory(now)
        session.add(advisory)
        people = [
            Citizen(
                public_id=str(uuid.uuid4()),
                language="ko",
                notify_sms=True,
                notify_email=True,
                phone_sealed=vault.seal("phone", phone_of(n)),
                phone_hash=vault.lookup_hash("phone", phone_of(n)),
                email_sealed=vault.seal("email", email_of(n)),
                email_hash=vault.lookup_hash("email", email_of(n)),
                consent_at=now,
            )
            for n in range(citizens)
        ]
        session.add_all(people)
        session.flush()
        rows = [(advisory.id, 1, p.id, ch) for p in people for ch in ("sms", "email")]
        insert_alerts(session.connection(), rows=rows, now=now)
    engine.dispose()
