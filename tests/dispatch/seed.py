"""A committed database full of pending alerts, for tests that run the dispatcher as a
separate process: citizens with sealed contacts, one advisory, and its ledger rows."""

import atexit
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text
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


# One migrated database per backend and process, copied for each scratch database: running
# the 41 migrations took about 2 s a database on a busy machine, for some 150 a run.
_MIGRATED: dict[str, str] = {}


def _migrated_sqlite() -> Path:
    if "sqlite" not in _MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="anjeon-migrated-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        upgrade(f"sqlite:///{folder / 'migrated.db'}")
        _MIGRATED["sqlite"] = str(folder / "migrated.db")
    return Path(_MIGRATED["sqlite"])


def _migrated_postgresql(admin: Engine, database_url: str) -> str:
    """A migrated database beside the test's, `<name>_migrated`, made anew by each process
    (a leg's base name is its own): no connection stays open to it, so it can be a template."""
    if database_url not in _MIGRATED:
        template = f"{make_url(database_url).database}_migrated"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{template}"'))
        upgrade(make_url(database_url).set(database=template).render_as_string(False))
        _MIGRATED[database_url] = template
    return _MIGRATED[database_url]


@contextmanager
def scratch_database(database_url: str, tmp_path, name: str) -> Iterator[str]:
    """A new, migrated database on the same backend, dropped afterwards: a copy of one this
    process migrated (the migrations themselves are tested in tests/test_migrations.py)."""
    if make_url(database_url).get_backend_name() == "sqlite":
        path = tmp_path / (name + ".db")
        with (
            closing(sqlite3.connect(_migrated_sqlite())) as source,
            closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)
        yield f"sqlite:///{path}"
        return
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    database = f"{make_url(database_url).database}_{name}"
    template = _migrated_postgresql(admin, database_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{database}" TEMPLATE "{template}"'))
    url = make_url(database_url).set(database=database).render_as_string(hide_password=False)
    try:
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
