"""Rotating the data secret (ANJEON_DATA_KEYS): what was sealed and signed under the secret
before still opens and verifies while it is listed, `anjeon reseal` seals every value again
under the new one, and once the old secret is dropped nothing is lost; look-ups never change."""

import logging
import os
import secrets
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from service import cli, privacy
from service.app import create_app
from service.checkin import duty
from service.checkin.models import CheckinAnswer, HelpMessage
from service.citizens import reseal
from service.citizens.models import Citizen
from service.config import get_settings
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.dispatcher import Dispatcher
from service.dispatch.recipients import recipients
from service.dispatch.reference import Links
from service.ledger.models import Alert
from service.privacy import UNREADABLE, PersonalDataVault, _derive
from service.staff import service as staff_service
from tests.builders import register
from tests.conftest import TEST_SECRET, make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.seed import email_of, phone_of, scratch_database, seed_pending

NEW = secrets.token_urlsafe(40)
OTHER = secrets.token_urlsafe(40)


def test_a_value_sealed_before_versions_still_opens():
    """Version 1 (before a value named its key) opens under the secret that sealed it, first
    or earlier in the list; a new value names its key."""
    nonce = os.urandom(12)
    aead = AESGCM(_derive(TEST_SECRET.encode(), b"anjeon/pii-encryption/v1"))
    old = b"\x01" + nonce + aead.encrypt(nonce, b"+821077774242", b"phone")
    assert PersonalDataVault(TEST_SECRET.encode()).open("phone", old) == "+821077774242"
    rotated = PersonalDataVault(TEST_SECRET.encode(), [NEW.encode(), TEST_SECRET.encode()])
    assert rotated.open("phone", old) == "+821077774242"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        PersonalDataVault(TEST_SECRET.encode(), [NEW.encode()]).open("phone", old)
    sealed = rotated.seal("phone", "+821077774242")
    assert sealed.startswith(rotated.current_prefix) and sealed[:1] == b"\x02"
    # Only the data secrets listed open it; the look-up hash comes from the service secret.
    with pytest.raises(ValueError, match="no longer configured"):
        PersonalDataVault(TEST_SECRET.encode()).open("phone", sealed)
    assert rotated.lookup_hash("phone", "+82") == PersonalDataVault(
        TEST_SECRET.encode()
    ).lookup_hash("phone", "+82")


def test_check_in_links_signed_before_a_rotation_verify_while_its_secret_is_listed():
    now = utcnow()
    before = Links("https://anjeon.test", PersonalDataVault(TEST_SECRET.encode()))
    token = before.checkin_token(citizen_id=7, advisory_id=9, asked_at=now)
    rotated = Links(
        "https://anjeon.test",
        PersonalDataVault(TEST_SECRET.encode(), [NEW.encode(), TEST_SECRET.encode()]),
    )
    after = Links("https://anjeon.test", PersonalDataVault(TEST_SECRET.encode(), [NEW.encode()]))
    assert rotated.read_checkin(token, now) == (7, 9)
    assert after.read_checkin(token, now) is None
    fresh = rotated.checkin_token(citizen_id=7, advisory_id=9, asked_at=now)
    assert fresh != token and after.read_checkin(fresh, now) == (7, 9)
    # A send from before the rotation carries the old token: a look-up asks for it too.
    assert rotated.earlier_checkin_tokens(fresh) == [token]
    assert after.earlier_checkin_tokens(fresh) == []
    # The alert links' tags come from the look-up key: a rotation leaves them as they were.
    assert rotated.reference(5) == before.reference(5) == after.reference(5)


def _seal_words(url: str, vault: PersonalDataVault, citizen_ids: list[int]) -> None:
    with make_session_factory(make_engine(url)).begin() as session:
        for citizen_id in citizen_ids:
            session.add(
                CheckinAnswer(
                    advisory_id=1,
                    citizen_id=citizen_id,
                    answer="help",
                    channel="sms",
                    note_sealed=vault.seal("checkin-note", f"trapped {citizen_id}"),
                    answered_at=utcnow(),
                )
            )
            session.add(
                HelpMessage(
                    citizen_id=citizen_id,
                    channel="sms",
                    note_sealed=vault.seal("checkin-note", f"help {citizen_id}"),
                )
            )


def _everything_opens(session: Session, vault: PersonalDataVault) -> dict[str, list[str]]:
    opened: dict[str, list[str]] = {}
    for sealed in reseal.SEALED_COLUMNS:
        column = sealed.table.c[sealed.column]
        rows = session.execute(
            select(sealed.table).where(column.is_not(None)).order_by(sealed.table.c.id)
        ).mappings()
        opened[sealed.name] = [vault.open(sealed.field_of(row), row[sealed.column]) for row in rows]
    return opened


def _anjeon(monkeypatch, capsys, url: str, data_keys: str, *args: str) -> tuple[int, str]:
    """`anjeon *args` with these data secrets: its exit code, and what it printed."""
    monkeypatch.setenv("ANJEON_DATABASE_URL", url)
    monkeypatch.setenv("ANJEON_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ANJEON_DATA_KEYS", data_keys)
    get_settings.cache_clear()
    try:
        code = cli.main(list(args))
    finally:
        get_settings.cache_clear()
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def _reseal(monkeypatch, capsys, url: str, data_keys: str, *args: str) -> tuple[int, str]:
    return _anjeon(monkeypatch, capsys, url, data_keys, "reseal", *args)


def test_a_rotation_seals_everything_again_and_loses_nothing(
    database_url, tmp_path, monkeypatch, capsys
):
    with scratch_database(database_url, tmp_path, "key_rotation") as url:
        with make_session_factory(make_engine(url)).begin() as session:
            consul = staff_service.create_key(session, name="consul-rot", role="consul").key
        headers = {"Authorization": f"Bearer {consul}"}
        before = PersonalDataVault(TEST_SECRET.encode())
        with TestClient(create_app(make_settings(url))) as client:
            ids = [register(client, name=f"이서연{n}")[0] for n in range(3)]
        with TestClient(create_app(make_settings(url, verification="required"))) as client:
            waiting = register(client, channels=["sms"], email=None)[0]  # a contact_code row
        with make_session_factory(make_engine(url))() as session:
            people = list(session.scalars(select(Citizen).order_by(Citizen.id)))
            hashes = [(p.phone_hash, p.email_hash) for p in people]
        _seal_words(url, before, [p.id for p in people])

        # 1. The new secret first, the old one after it: both open, new values use the new one.
        rotating = f"{NEW},{TEST_SECRET}"
        vault = PersonalDataVault(TEST_SECRET.encode(), [NEW.encode(), TEST_SECRET.encode()])
        with TestClient(create_app(make_settings(url, data_keys=rotating))) as client:
            shown = client.post(
                f"/v1/citizens/{ids[0]}/reveal",
                json={"reason": "checking the rotation"},
                headers=headers,
            )
            assert shown.status_code == 200, shown.text
            assert shown.json()["name"] == "이서연0"
            newcomer = register(client, name="박민준")[0]
        with make_session_factory(make_engine(url))() as session:
            plain = _everything_opens(session, vault)
            fresh = session.scalar(select(Citizen).where(Citizen.public_id == newcomer))
            assert fresh is not None and fresh.name_sealed is not None
            assert fresh.name_sealed.startswith(vault.current_prefix)
        assert len(plain["contact_code.contact_sealed"]) == 1
        assert len(plain["checkin_answer.note_sealed"]) == 4
        assert "이서연2" in plain["citizen.name_sealed"]

        # A process that does not list the old secret (a typo, or dropped too soon) refuses to
        # start, naming what it could not open; with the list, it runs.
        code, out = _anjeon(monkeypatch, capsys, url, NEW, "dispatch", "--once")
        assert code == 2 and "sealed under a data secret that is not listed" in out
        assert "citizen.name_sealed (fingerprint" in out
        assert _anjeon(monkeypatch, capsys, url, rotating, "dispatch", "--once")[0] == 0
        code, out = _reseal(monkeypatch, capsys, url, rotating, "--check")
        first, old = vault.fingerprints
        assert f"sealing under the data secret listed first: fingerprint {first}" in out
        assert f"also opening under: {old}" in out
        assert code == 1 and "left under an earlier secret: citizen.name_sealed: 4" in out
        code, out = _reseal(monkeypatch, capsys, url, rotating, "--batch", "2")
        assert code == 0, out
        assert "citizen.name_sealed: sealed again 4" in out  # not the newcomer's
        assert "help_message.note_sealed: sealed again 4" in out
        assert "contact_code.contact_sealed: sealed again 1" in out
        assert "nothing left" in out

        # 2. The old secret dropped: every value opens as it did, look-ups are unchanged.
        after = PersonalDataVault(TEST_SECRET.encode(), [NEW.encode()])
        with make_session_factory(make_engine(url))() as session:
            assert _everything_opens(session, after) == plain
            people = list(session.scalars(select(Citizen).order_by(Citizen.id)))
            assert [(p.phone_hash, p.email_hash) for p in people][: len(hashes)] == hashes
        with TestClient(create_app(make_settings(url, data_keys=NEW))) as client:
            for n, citizen_id in enumerate(ids):
                shown = client.post(
                    f"/v1/citizens/{citizen_id}/reveal",
                    json={"reason": "after the rotation"},
                    headers=headers,
                )
                assert shown.status_code == 200 and shown.json()["name"] == f"이서연{n}"
            shown = client.post(
                f"/v1/citizens/{waiting}/reveal",
                json={"reason": "a contact still waiting for its code"},
                headers=headers,
            )
            assert shown.status_code == 200 and shown.json()["phone"]
        assert _reseal(monkeypatch, capsys, url, NEW, "--check")[0] == 0

        # 3. A value no listed secret opens is reported and left, and the run says so.
        with make_session_factory(make_engine(url)).begin() as session:
            stray = PersonalDataVault(OTHER.encode())
            session.add(
                HelpMessage(
                    citizen_id=1, channel="sms", note_sealed=stray.seal("checkin-note", "x")
                )
            )
        code, out = _reseal(monkeypatch, capsys, url, NEW)
        assert code == 1 and "1 no listed secret opens, left as they are" in out
        assert "help_message.note_sealed: 1" in out


def test_a_contact_no_listed_secret_opens_fails_its_alert_not_the_batch(db):
    """A review: one value left under a dropped data secret made every dispatch batch holding
    its citizen fail. It is that citizen's alert that fails now, saying why."""
    dropped = PersonalDataVault(TEST_SECRET.encode(), [OTHER.encode()])
    vault = PersonalDataVault(TEST_SECRET.encode(), [NEW.encode()])
    people = [
        Citizen(
            public_id=str(uuid.uuid4()),
            language="en",
            phone_sealed=sealing.seal("phone", "+821055550100"),
            consent_at=utcnow(),
        )
        for sealing in (dropped, vault)
    ]
    db.add_all(people)
    db.flush()
    found = recipients(db, [p.id for p in people], channel="sms", vault=vault)
    lost, kept = (found[p.id] for p in people)
    assert lost.unreadable and lost.address is None and lost.reachable == {"sms"}
    assert not kept.unreadable and kept.address == "+821055550100"


def test_the_start_up_check_lets_a_process_start_while_the_database_is_down(caplog):
    """A review: the check opened a session first thing, and a database down at start made
    `anjeon dispatch` exit where it had ridden the outage out. It is skipped, and says so."""
    down = make_settings("postgresql+psycopg://postgres@127.0.0.1:1/anjeon_down")
    cli._refuse_unlisted_data_secrets(down)
    assert "data secrets not checked: the database did not answer" in caplog.text


def test_the_start_up_check_logs_the_fingerprints_a_process_runs_with(database_url, caplog):
    """An operator's review: rotation step 4 says reseal must print the new secret's
    fingerprint, and nothing told which fingerprints a process runs with."""
    caplog.set_level(logging.INFO, logger="anjeon.startup")
    settings = make_settings(database_url, data_keys=f"{NEW},{TEST_SECRET}")
    cli._refuse_unlisted_data_secrets(settings)
    [line] = [r for r in caplog.records if r.getMessage() == "data secrets listed"]
    assert line.fingerprints == settings.personal_data_vault().fingerprints  # type: ignore[attr-defined]
    assert len(line.fingerprints) == 2 and NEW not in caplog.text  # type: ignore[attr-defined]


def test_each_unreadable_read_is_counted_and_logged_at_most_every_five_minutes(monkeypatch):
    """A review: a staff list refreshed during a key problem wrote a log line per value read.
    Each read counts (the process's anjeon_unreadable_values_total); the line comes once per
    field and fingerprint every 5 minutes, saying how many reads it stands for."""
    dropped = PersonalDataVault(TEST_SECRET.encode(), [OTHER.encode()])
    listed = PersonalDataVault(TEST_SECRET.encode(), [NEW.encode()])
    phones = [dropped.seal("phone", f"+8210555501{n:02d}") for n in range(3)]
    name = dropped.seal("name", "이서연")
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    clock = [1000.0]
    monkeypatch.setattr(privacy._UNOPENED, "clock", lambda: clock[0])
    monkeypatch.setattr(privacy._UNOPENED, "_since", {})

    def counted(field: str) -> float:
        return REGISTRY.get_sample_value("anjeon_unreadable_values_total", {"field": field})

    before = {field: counted(field) for field in ("phone", "name", "email")}
    logging.getLogger("anjeon.privacy").addHandler(handler)
    try:
        assert [listed.read("phone", blob) for blob in phones] == [UNREADABLE] * 3
        assert listed.read("name", name) == UNREADABLE
        clock[0] += 299
        assert listed.read("phone", phones[0]) == UNREADABLE
        clock[0] += 2
        assert listed.read("phone", phones[1]) == UNREADABLE
        listed.report_unopened("phone", phones[2], citizen=7)  # the dispatcher's
        assert listed.read("email", None) is None  # no value: nothing to count
    finally:
        logging.getLogger("anjeon.privacy").removeHandler(handler)
    assert counted("phone") - before["phone"] == 6 and counted("name") - before["name"] == 1
    assert counted("email") == before["email"]
    said = [(r.field, r.sealed_by, r.unlogged_before) for r in lines]  # type: ignore[attr-defined]
    fingerprint = PersonalDataVault(OTHER.encode()).fingerprints[0]
    assert said == [("phone", fingerprint, 0), ("name", fingerprint, 0), ("phone", fingerprint, 3)]


def test_a_value_no_listed_secret_opens_reads_unreadable_where_people_read_it(
    client, db, staff_headers
):
    """A review: one value left under a dropped data secret made a staff list of its country,
    the citizen's reveal, their own record and their call for help to the duty staff a 500
    (the notice retried every minute, never sent). Each shows [unreadable] in its place now,
    and the rest as it is."""
    citizen_id, auth, body = register(client, name="이서연", location={"lat": 35.6, "lon": 139.6})
    dropped = PersonalDataVault(TEST_SECRET.encode(), [OTHER.encode()])
    citizen = db.scalar(select(Citizen).where(Citizen.public_id == citizen_id))
    citizen.name_sealed = dropped.seal("name", "이서연")
    citizen.phone_sealed = dropped.seal("phone", "+821055550100")
    help_message = HelpMessage(
        citizen_id=citizen.id, channel="sms", note_sealed=dropped.seal("checkin-note", "help")
    )
    db.add(help_message)
    db.flush()
    consul = staff_headers("consul")

    listed = client.get("/v1/registry/citizens", params={"country": "JP"}, headers=consul)
    assert listed.status_code == 200, listed.text
    [item] = [i for i in listed.json()["items"] if i["id"] == citizen_id]
    assert item["phone"] == UNREADABLE and item["email"].endswith(body["email"][-8:])
    # Lists of one contact each show the one that can be read.
    helps = client.get("/v1/help-messages", headers=consul)
    assert helps.status_code == 200, helps.text
    [row] = [r for r in helps.json()["items"] if r["citizen_id"] == citizen_id]
    assert row["contact"] == item["email"] != UNREADABLE
    revealed = client.post(
        f"/v1/citizens/{citizen_id}/reveal",
        json={"reason": "No answer to the level 3 alert; calling to check."},
        headers=consul,
    )
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["name"] == UNREADABLE
    assert revealed.json()["phone"]["address"] == UNREADABLE
    assert revealed.json()["email"]["address"] == body["email"]
    own = client.get(f"/v1/citizens/{citizen_id}", headers=auth)
    assert own.status_code == 200, own.text
    assert (own.json()["name"], own.json()["phone"]) == (UNREADABLE, UNREADABLE)

    vault = PersonalDataVault(TEST_SECRET.encode())
    notice = duty.read_help_message_notice(
        db, vault=vault, help_message_id=help_message.id, now=utcnow()
    )
    assert notice is not None and notice.citizen_id == citizen_id
    assert (notice.name, notice.phone, notice.note) == (UNREADABLE, UNREADABLE, UNREADABLE)
    assert notice.email == body["email"] and f"Phone: {UNREADABLE}" in notice.text()
    # Not passed on as a value a receiver of the webhook might dial.
    payload = notice.payload()
    assert (payload["name"], payload["phone"], payload["note"]) == ("", None, "")
    assert payload["unreadable"] == ["name", "phone", "note"]
    assert payload["email"] == body["email"]

    # Another change leaves the unreadable number as it is (a reseal may open it again);
    # giving it again replaces it.
    kept = citizen.phone_sealed
    changed = client.patch(f"/v1/citizens/{citizen_id}", json={"language": "en"}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == UNREADABLE and changed.json()["language"] == "en"
    db.expire_all()
    assert db.get(Citizen, citizen.id).phone_sealed == kept
    again = client.patch(
        f"/v1/citizens/{citizen_id}", json={"phone": "+821055550177"}, headers=auth
    )
    assert again.status_code == 200, again.text
    assert again.json()["phone"] == "+821055550177"


def test_alerts_failed_as_unreadable_go_once_a_reseal_leaves_nothing_unreadable(
    database_url, tmp_path, monkeypatch, capsys, twilio, smtp
):
    """An operator's walkthrough: alerts that failed because a dispatcher did not list the
    secret that sealed their contacts waited for a staff retry, one by one. The reseal that
    leaves nothing unreadable queues them again; `--check` and a run that leaves a value
    unopened do not, nor (left to staff, a review) an alert failed for another reason, a
    check-in round's question, one older than a check-in link, a fallback, one whose
    fallback may have reached the citizen, or (a review) one of an erased citizen. One whose
    last try may have gone is looked up."""
    with scratch_database(database_url, tmp_path, "requeue_unreadable") as url:
        seed_pending(url, citizens=5, secret=TEST_SECRET.encode())
        factory = make_session_factory(make_engine(url))

        def dispatch(data_keys: list[str]) -> None:
            settings = make_settings(url, **notifier_settings(twilio, smtp))
            vault = PersonalDataVault(TEST_SECRET.encode(), [k.encode() for k in data_keys])
            dispatcher = Dispatcher.from_settings(settings, factory, vault=vault)
            try:
                dispatcher.drain()
            finally:
                dispatcher.close()

        def statuses() -> list[str]:
            with factory() as session:
                return list(session.scalars(select(Alert.status).order_by(Alert.id)))

        with factory.begin() as session:  # one's last try may have gone: it keeps saying so
            session.execute(update(Alert).values(outcome_unknown=Alert.id == 8))
        dispatch([NEW])  # TEST_SECRET, which sealed every contact, dropped too soon
        with factory() as session:
            failed = session.execute(
                select(Alert.id, Alert.error_code, Alert.outcome_unknown).order_by(Alert.id)
            ).all()
        assert [tuple(row) for row in failed] == [
            (n, "unreadable", n == 8) for n in range(1, 11)
        ] and not twilio.messages
        with factory.begin() as session:
            for alert_id, values in {
                1: {"error_code": "rejected"},
                2: {"checkin_round": 1},
                3: {"created_at": utcnow() - timedelta(days=8)},
                6: {"status": "sent", "fallback_of": 5},
            }.items():
                session.execute(update(Alert).where(Alert.id == alert_id).values(values))
            session.execute(update(Citizen).where(Citizen.id == 5).values(status="erased"))
        rotating = f"{NEW},{TEST_SECRET}"
        code, out = _reseal(monkeypatch, capsys, url, rotating, "--check")
        assert code == 1 and "queued again" not in out
        with factory.begin() as session:  # a value that no listed secret opens
            session.add(
                HelpMessage(
                    citizen_id=1,
                    channel="sms",
                    note_sealed=PersonalDataVault(OTHER.encode()).seal("checkin-note", "x"),
                )
            )
        code, out = _reseal(monkeypatch, capsys, url, rotating)
        assert code == 1 and "queued again" not in out
        assert statuses().count("pending") == 0
        with factory.begin() as session:
            session.execute(delete(HelpMessage))
        code, out = _reseal(monkeypatch, capsys, url, rotating)
        assert code == 0 and "alerts that had failed as unreadable, queued again: 3" in out
        tail = ["failed"] * 2  # the erased citizen's (ids 9 and 10)
        assert statuses() == ["failed"] * 3 + ["pending", "failed", "sent"] + ["pending"] * 2 + tail
        twilio.lists.clear()
        dispatch([NEW])  # what the service lists once the reseal is done
        assert statuses() == ["failed"] * 3 + ["sent", "failed", "sent"] + ["sent"] * 2 + tail
        # Each citizen's e-mail row comes before their SMS row (ids 1-8: citizen 0 to 3).
        assert Counter(m["to"] for m in twilio.messages) == {phone_of(1): 1, phone_of(3): 1}
        assert Counter(m["To"] for m in smtp.received) == {email_of(3): 1}
        assert [q["To"] for q in twilio.lists] == [phone_of(3)]  # looked up before its send


def test_a_row_a_writer_holds_is_skipped_not_waited_for_and_sealed_once_free(
    database_url, tmp_path, monkeypatch, capsys
):
    """Reseal locked each batch's rows and waited for one a writer held: a writer locking two
    rows in the other order (a contact taken from another record) made a deadlock, and
    PostgreSQL stopped one of them. Now the held row is skipped, and sealed once it is free."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's row locks: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with scratch_database(database_url, tmp_path, "reseal_held") as url:
        with TestClient(create_app(make_settings(url))) as client:
            ids = [register(client, name=f"김민수{n}")[0] for n in range(3)]
        rotating = f"{NEW},{TEST_SECRET}"
        # Waiting for a lock is an error in the reseal's connections (libpq reads PGOPTIONS):
        # the run before this change waited here until the writer let go.
        monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=5000")
        with make_engine(url).connect() as writer:
            writer.execute(
                select(Citizen.id).where(Citizen.public_id == ids[1]).with_for_update()
            ).scalar_one()
            code, out = _reseal(monkeypatch, capsys, url, rotating)
            writer.rollback()
        assert code == 1, out
        assert "citizen.name_sealed: sealed again 2" in out
        assert "left under an earlier secret: citizen.name_sealed: 1" in out
        code, out = _reseal(monkeypatch, capsys, url, rotating)
        assert code == 0, out
        assert "citizen.name_sealed: sealed again 1" in out and "nothing left" in out
