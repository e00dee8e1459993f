"""Phone numbers and e-mail addresses are never stored or logged in clear."""

import logging
import os
import shutil
import subprocess
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from service.app import create_app
from service.citizens.contact import mask_phone
from service.citizens.models import Citizen
from service.db import flush_write_ahead_log, make_engine, make_session_factory, utcnow
from service.ledger.models import Alert
from service.migrate import upgrade
from service.privacy import PersonalDataVault
from service.scheduler import jobs
from tests.advisories.builders import advisory_body
from tests.builders import citizen_body, register
from tests.conftest import PG_URL, WarningRecords, make_settings
from tests.dispatch.conftest import dispatcher_in

PHONE = "010-7777-4242"
SECRETS = [
    b"+821077774242",
    b"1077774242",
    b"7777-4242",
    b"sealed.person@example.net",
    b"sealed.person",
]


def _register_committed(database_url: str) -> dict:
    body = citizen_body(phone=PHONE, email="sealed.person@example.net", name="Sealed Person")
    with TestClient(create_app(make_settings(database_url))) as client:
        response = client.post("/v1/citizens", json=body)
        assert response.status_code == 201
        # The API still returns the clear values to the citizen.
        token = response.json()["manage_token"]
        record = client.get(
            f"/v1/citizens/{response.json()['id']}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert record["phone"] == "+821077774242"
    return response.json()


def test_sqlite_file_holds_no_contact_in_clear(tmp_path):
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    upgrade(url)
    _register_committed(url)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("sealed.db"))
    assert len(raw) > 0
    for secret in [*SECRETS, b"Sealed Person"]:
        assert secret not in raw, secret


@pytest.mark.skipif(not PG_URL, reason="ANJEON_TEST_DATABASE_URL not set")
def test_postgresql_dump_holds_no_contact_in_clear():
    upgrade(PG_URL)  # already at head when the PostgreSQL fixtures ran first
    assert shutil.which("pg_dump"), "pg_dump is needed (postgresql-client)"
    created = _register_committed(PG_URL)
    try:
        dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        dump = subprocess.run(
            ["pg_dump", "--data-only", "--table=citizen", "--table=citizen_place", dsn],
            capture_output=True,
            check=True,
            env={**os.environ},
        ).stdout
        assert created["id"].encode() in dump  # the row is in the dump...
        for secret in SECRETS:
            assert secret not in dump, secret  # ...its contacts are not
    finally:
        with make_session_factory(make_engine(PG_URL)).begin() as session:
            session.execute(delete(Citizen).where(Citizen.public_id == created["id"]))


def test_logs_hold_no_contact(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/v1/citizens", json=citizen_body(phone=PHONE, email="sealed.person@example.net"))
    client.post("/v1/citizens", json=citizen_body(phone="010-7777-42429", email="sealed.person@"))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "request" in text  # the access log did run
    for secret in SECRETS:
        assert secret.decode() not in text


def test_sealed_fields_are_bound_to_their_column():
    vault = PersonalDataVault(b"k" * 40)
    sealed = vault.seal("phone", "+821077774242")
    assert vault.open("phone", sealed) == "+821077774242"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        vault.open("email", sealed)
    assert vault.seal("phone", "+821077774242") != sealed  # fresh nonce every time
    assert vault.lookup_hash("phone", "+821077774242") == vault.lookup_hash(
        "phone", "+821077774242"
    )
    other = PersonalDataVault(b"j" * 40)
    assert other.lookup_hash("phone", "+821077774242") != vault.lookup_hash(
        "phone", "+821077774242"
    )


def test_an_erased_record_cannot_be_read_back_from_the_sqlite_files(tmp_path):
    """Found by a privacy review: after DELETE the write-ahead log still held the record's
    pages from before, and the service's own key opened the name and contacts in them. Freed
    content is now overwritten (secure_delete) and the log emptied after the erasure."""
    url = f"sqlite:///{tmp_path / 'erased.db'}"
    upgrade(url)
    created = _register_committed(url)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        stored = session.scalar(select(Citizen).where(Citizen.public_id == created["id"]))
        sealed = [stored.name_sealed, stored.phone_sealed, stored.email_sealed]
    engine.dispose()
    assert all(sealed)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("erased.db"))
    assert all(value in raw for value in sealed)  # the test can see them while they are kept
    manage = {"Authorization": f"Bearer {created['manage_token']}"}
    with TestClient(create_app(make_settings(url))) as client:
        client.get("/readyz")  # the server's connections are open, as they stay in service
        assert client.delete(f"/v1/citizens/{created['id']}", headers=manage).status_code == 204
        # Read while it runs: the last connection to close empties the log by itself.
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("erased."))
    for value in sealed:
        assert value not in raw


def test_erasure_forgets_the_providers_message_ids_and_what_the_citizen_chose(
    client, db, settings, staff_headers
):
    """Found by a privacy review: an erased citizen's alerts kept the provider's message id
    (the provider's log holds their number under it), and their record kept when they last
    asked for help, their STOP, quiet hours and drills."""
    citizen_id, auth, _ = register(client, location={"lat": 35.5, "lon": 139.5})
    # Level 3: sent now, whatever the hour in Tokyo (quiet hours hold levels 1-2).
    created = client.post(
        "/v1/advisories", json=advisory_body(level=3), headers=staff_headers("consul")
    )
    assert created.status_code == 201, created.text
    dispatcher = dispatcher_in(db, settings)
    dispatcher.drain()
    dispatcher.close()
    stored = db.scalar(select(Citizen).where(Citizen.public_id == citizen_id))
    sent = db.scalars(select(Alert).where(Alert.citizen_id == stored.id)).all()
    assert sent and all(a.provider_ref for a in sent)
    stored.duty_paged_at = stored.sms_opted_out_at = utcnow()
    stored.quiet_from, stored.exercises = "20:00", True
    db.flush()
    assert client.delete(f"/v1/citizens/{citizen_id}", headers=auth).status_code == 204
    db.expire_all()
    assert [a.provider_ref for a in sent] == [None] * len(sent)
    assert (stored.duty_paged_at, stored.sms_opted_out_at, stored.exercises) == (None, None, False)
    assert (stored.quiet_from, stored.quiet_to) == ("22:00", "07:00")


def test_emptying_the_log_never_waits_for_a_reader(tmp_path):
    """Found by a review: the checkpoint after an erasure waited (up to 10 s) for a reader to
    let go, and held every writer meanwhile; anyone who registers can erase. It now gives up at
    once, and the next erasure or the hourly purge empties the log."""
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    upgrade(url)
    engine = make_engine(url)
    reader = engine.raw_connection()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM citizen").fetchone()  # holds its snapshot
        with make_session_factory(engine).begin() as session:
            session.add(Citizen(public_id="busy", language="ko"))
        done = threading.Event()
        flushing = threading.Thread(
            target=lambda: (flush_write_ahead_log(engine), done.set()), daemon=True
        )
        told = WarningRecords()
        logging.getLogger("anjeon.db").addHandler(told)
        try:
            flushing.start()
            finished = done.wait(timeout=5)  # the reader is still open all this while
        finally:
            logging.getLogger("anjeon.db").removeHandler(told)
        assert finished, "the checkpoint waited for the reader"
        assert any(m.startswith("write-ahead log not emptied") for m in told.messages)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    flush_write_ahead_log(engine)
    assert (tmp_path / "busy.db-wal").stat().st_size == 0  # emptied once nobody reads
    engine.dispose()
    jobs_with_then = {j.id for j in jobs(make_settings(url), after_purge=print) if j.then}
    assert "purge-unverified" in jobs_with_then


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+821012345678", "+82******5678"),  # Korea: as staff always saw it
        ("+447911123456", "+44******3456"),
        ("+14155551234", "+14******234"),  # 11 digits: six hidden, so three shown, not four
        ("+50051234", "+50****34"),  # the Falklands: a review saw +50**1234
        ("+6907290", "+69****0"),  # Tokelau: a review saw +69*7290
    ],
)
def test_a_masked_number_hides_at_least_half_of_its_digits(e164, masked):
    assert mask_phone(e164) == masked
    digits = len(e164) - 1
    assert masked.count("*") >= digits / 2 and len(masked) == len(e164)
