"""Writers of one citizen's answers at the same moment, each in its own transaction on its own
connection, on both backends: a consul taking the case while their SMS answer comes in (no
deadlock, whatever order the rows lie in on disk), two consuls taking it at once (one wins),
a STOP with a START (the number's row and the citizen's copy agree), and a record erased while
its page takes words (no deadlock, and the words go with the record)."""

import threading
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.advisories.models import Advisory
from service.checkin import duty
from service.checkin.answers import (
    HELP_MESSAGES_KEPT,
    Heard,
    answering,
    hear_sms,
    record_answer,
)
from service.checkin.models import Checkin, CheckinAnswer, HelpMessage
from service.checkin.page import MAX_ANSWERS, _add_to_page_help, _in_force_locked, checkin_page
from service.checkin.rollcall import take_help
from service.citizens import verification
from service.citizens.models import Citizen, SmsOptOut
from service.citizens.service import erase_citizen
from service.citizens.verification import contact_hash
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.reference import Links
from service.dispatch.render import Renderer
from service.dispatch.sms_opt_out import hear_opt_out
from service.errors import Conflict, TooManyRequests
from service.privacy import PersonalDataVault
from tests.conftest import TEST_SECRET
from tests.dispatch.seed import scratch_database, seeded_advisory
from tests.lock_waits import until_one_waits_on_a_lock

VAULT = PersonalDataVault(TEST_SECRET.encode())
PEOPLE = 12


@pytest.fixture
def factory(database_url: str, tmp_path) -> Iterator[sessionmaker[Session]]:
    with scratch_database(database_url, tmp_path, "concurrent_answers") as url:
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


def _advisory(session: Session) -> Advisory:
    advisory = seeded_advisory(utcnow())
    session.add(advisory)
    session.flush()
    return advisory


def _help(
    session: Session, advisory: Advisory, person: Citizen, *, channel: str, note: str
) -> None:
    record_answer(
        session,
        vault=VAULT,
        advisory_id=advisory.id,
        citizen_id=person.id,
        answer="help",
        channel=channel,
        note=note,
        now=utcnow(),
    )


def _seed(factory: sessionmaker[Session]) -> tuple[list[Advisory], list[Citizen]]:
    """Two advisories; each citizen's help answer to the newer one stored first, so their rows
    lie on disk against advisory order (what an earlier bare UPDATE locked them in)."""
    with factory.begin() as session:
        advisories = [_advisory(session), _advisory(session)]
        people = []
        for n in range(PEOPLE):
            person = Citizen(
                public_id=str(uuid.uuid4()),
                language="en",
                phone_hash=f"race-{uuid.uuid4().hex}",
                consent_at=utcnow(),
            )
            session.add(person)
            session.flush()
            people.append(person)
            for advisory in reversed(advisories):
                _help(session, advisory, person, channel="sms", note=f"trapped {n}")
        session.expunge_all()
    return advisories, people


def _at_once(*work: Callable[[], object]) -> list[BaseException | object]:
    """Runs each in its own thread, released together; what each returned or raised."""
    start = threading.Barrier(len(work))
    results: list[BaseException | object] = [None] * len(work)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work[i]()
        except BaseException as exc:  # reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_take_and_an_sms_answer_at_once_never_deadlock(factory):
    advisories, people = _seed(factory)
    first, second = advisories

    for person in people:

        def take(person=person):
            with factory.begin() as session:
                advisory = session.get(Advisory, first.id)
                return take_help(
                    session,
                    advisory=advisory,
                    citizen_public_id=person.public_id,
                    staff="kim",
                    now=utcnow(),
                ).advisories

        def answer(person=person):
            # As the SMS webhook records one answer for every open check-in.
            with factory.begin() as session:
                for advisory_id in sorted((first.id, second.id)):
                    record_answer(
                        session,
                        vault=VAULT,
                        advisory_id=advisory_id,
                        citizen_id=person.id,
                        answer="help",
                        channel="sms",
                        note="still trapped",
                        now=utcnow(),
                    )
                return "answered"

        taken, answered = _at_once(take, answer)
        assert taken == [first.public_id, second.public_id], taken
        assert answered == "answered", answered
    with factory() as session:
        holders = session.scalars(select(Checkin.taken_by)).all()
    assert holders == ["kim"] * (2 * PEOPLE)


def test_two_consuls_taking_at_once_one_wins(factory):
    advisories, people = _seed(factory)
    for person in people:

        def take(staff: str, advisory_id: int, person=person):
            with factory.begin() as session:
                return take_help(
                    session,
                    advisory=session.get(Advisory, advisory_id),
                    citizen_public_id=person.public_id,
                    staff=staff,
                    now=utcnow(),
                ).taken_by

        results = _at_once(
            lambda person=person: take("kim", advisories[0].id, person),
            lambda person=person: take("lee", advisories[1].id, person),
        )
        won = [r for r in results if isinstance(r, str)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert won[0] in str(lost[0]) or "already taken by" in str(lost[0])
        with factory() as session:
            holders = set(
                session.scalars(select(Checkin.taken_by).where(Checkin.citizen_id == person.id))
            )
        assert holders == {won[0]}


def test_a_stop_and_a_start_at_once_leave_the_number_and_its_record_agreeing(factory):
    hashes = []
    with factory.begin() as session:
        for _ in range(PEOPLE):
            phone_hash = f"race-{uuid.uuid4().hex}"
            hashes.append(phone_hash)
            session.add(
                Citizen(
                    public_id=str(uuid.uuid4()),
                    language="en",
                    phone_hash=phone_hash,
                    consent_at=utcnow(),
                )
            )
    for phone_hash in hashes:

        def said(stop: bool, phone_hash=phone_hash):
            with factory.begin() as session:
                hear_opt_out(session, phone_hash=phone_hash, stop=stop, now=utcnow())

        assert _at_once(lambda: said(True), lambda: said(False)) == [None, None]
        with factory() as session:
            row = session.get(SmsOptOut, phone_hash)
            copy = session.scalar(
                select(Citizen.sms_opted_out_at).where(Citizen.phone_hash == phone_hash)
            )
        assert row is not None and (row.opted_out_at is None) == (copy is None)


def _eraser(
    factory: sessionmaker[Session],
    citizen_id: int,
    failed: list[BaseException],
    *,
    after: threading.Event | None = None,
) -> threading.Thread:
    """A thread that erases the citizen (once `after` is set), keeping what it raised."""

    def erase() -> None:
        if after is not None:
            after.wait(timeout=30)
        try:
            with factory.begin() as session:
                citizen = session.get(Citizen, citizen_id)
                assert citizen is not None
                erase_citizen(session, citizen=citizen)
        except BaseException as exc:  # reported to the test
            failed.append(exc)

    return threading.Thread(target=erase)


def test_a_record_erased_while_its_page_adds_words_never_deadlocks(factory, database_url):
    """The page (past a link's hourly answers) locks the citizen's check-ins, then the page help
    in force to add words to it; the erasure wiped the answers' words first and then waited
    for the check-ins: each waited on the other (PostgreSQL aborted one). It now locks the
    check-ins first, waits, and wipes the words the page added too."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    advisories, people = _seed(factory)
    person = people[0]
    with factory.begin() as session:
        for advisory in advisories:
            _help(session, advisory, person, channel="web", note="on the roof")
    failed: list[BaseException] = []

    eraser = _eraser(factory, person.id, failed)
    with factory.begin() as page:
        current = _in_force_locked(page, advisories[0].id, person.id)
        assert current is not None and current.answer == "help"
        eraser.start()
        until_one_waits_on_a_lock(factory, why_not=lambda: failed)
        links = SimpleNamespace(vault=VAULT)
        assert _add_to_page_help(page, links, current, "5th floor", utcnow()) == len("5th floor")
    eraser.join(timeout=60)
    assert not eraser.is_alive() and failed == []
    with factory() as session:
        citizen = session.get(Citizen, person.id)
        assert citizen is not None and citizen.status == "erased"
        notes = session.scalars(
            select(CheckinAnswer.note_sealed).where(CheckinAnswer.citizen_id == person.id)
        ).all()
    assert len(notes) == 4 and set(notes) == {None}


def _erasing(factory: sessionmaker[Session], citizen_id: int) -> Session:
    """An erasure of the citizen, done and not yet committed (the caller commits it)."""
    session = factory()
    citizen = session.get(Citizen, citizen_id)
    assert citizen is not None
    erase_citizen(session, citizen=citizen)
    return session


def test_an_sms_answer_during_an_erasure_finds_the_record_erased(factory, database_url):
    """A probe's "2 trapped …" came in while the record was being erased: it was kept as a
    help message after the 204, and the duty staff were paged with it. The answer now waits
    for the erasure and finds no record (a number nobody holds)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    number = "+821055550199"
    with factory.begin() as session:
        person = Citizen(
            public_id=str(uuid.uuid4()),
            language="en",
            phone_hash=contact_hash(VAULT, "sms", number),
            consent_at=utcnow(),
        )
        session.add(person)
    erasure = _erasing(factory, person.id)
    heard: list[object] = []

    def text_in() -> None:
        try:
            with factory.begin() as session:
                heard.append(
                    hear_sms(
                        session,
                        vault=VAULT,
                        sender=number,
                        body="2 trapped in the lobby",
                        provider_ref="SM" + uuid.uuid4().hex,
                        now=utcnow(),
                    )
                )
        except BaseException as exc:  # reported to the test
            heard.append(exc)

    texter = threading.Thread(target=text_in)
    texter.start()
    until_one_waits_on_a_lock(factory, why_not=lambda: heard)
    erasure.commit()
    erasure.close()
    texter.join(timeout=60)
    [result] = heard
    assert isinstance(result, Heard) and result.language is None and not result.unasked
    with factory() as session:
        assert session.scalars(select(HelpMessage)).all() == []


def test_an_erasure_waits_for_an_answer_under_way_and_takes_its_words(factory, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    advisories, people = _seed(factory)
    person = people[0]
    failed: list[BaseException] = []

    eraser = _eraser(factory, person.id, failed)
    with factory.begin() as answer:
        held = answer.scalar(answering(select(Citizen).where(Citizen.id == person.id)))
        assert held is not None and held.status == "active"
        eraser.start()
        until_one_waits_on_a_lock(factory, why_not=lambda: failed)
        for advisory in advisories:
            _help(answer, advisory, person, channel="web", note="bleeding, 5th floor")
    eraser.join(timeout=60)
    assert not eraser.is_alive() and failed == []
    with factory() as session:
        notes = session.scalars(
            select(CheckinAnswer.note_sealed).where(CheckinAnswer.citizen_id == person.id)
        ).all()
        untold = session.scalars(
            select(Checkin.id).where(
                Checkin.citizen_id == person.id, Checkin.duty_notified_at.is_(None)
            )
        ).all()
    # The seeded words and the answer's own are gone, and nobody will be paged with them.
    assert len(notes) == 4 and set(notes) == {None} and untold == []


def test_a_links_hourly_answers_hold_against_presses_at_once(factory, database_url):
    """A probe pressed "safe" 30 times at once on one link: all 30 were stored, past the cap
    of MAX_ANSWERS an hour (each counted before any had written). A citizen's page answers
    now wait for each other, on both backends."""
    with factory.begin() as session:
        advisory = _advisory(session)
        person = Citizen(public_id=str(uuid.uuid4()), language="en", consent_at=utcnow())
        session.add(person)
        session.flush()
        advisory_id, citizen_id = advisory.id, person.id
    links = Links("https://anjeon.test", VAULT)
    token = links.checkin_token(citizen_id=citizen_id, advisory_id=advisory_id, asked_at=utcnow())
    renderer = Renderer(sender={"ko": "외교부", "en": "MOFA"}, max_segments=3)

    def press(n: int) -> str:
        try:
            with factory.begin() as session:
                checkin_page(
                    session,
                    links=links,
                    renderer=renderer,
                    token=token,
                    now=utcnow(),
                    answer="safe",
                    note=f"pressed {n}",
                )
            return "stored"
        except TooManyRequests:
            return "refused"

    results = _at_once(*(lambda n=n: press(n) for n in range(MAX_ANSWERS + 10)))
    assert sorted(map(str, results)) == ["refused"] * 10 + ["stored"] * MAX_ANSWERS, results
    with factory() as session:
        stored = session.scalar(
            select(func.count()).select_from(CheckinAnswer).where(CheckinAnswer.channel == "web")
        )
    assert stored == MAX_ANSWERS


def test_help_messages_kept_an_hour_hold_against_texts_at_once(factory):
    """The probe's suspicion, run: the count of help messages kept an hour was taken before
    any of its neighbours wrote. A citizen's SMS now wait for each other, on both backends."""
    number = "+821055550299"
    with factory.begin() as session:
        session.add(
            Citizen(
                public_id=str(uuid.uuid4()),
                language="en",
                phone_hash=contact_hash(VAULT, "sms", number),
                consent_at=utcnow(),
            )
        )

    def text_in(n: int) -> None:
        with factory.begin() as session:
            hear_sms(
                session,
                vault=VAULT,
                sender=number,
                body=f"2 help {n}",
                provider_ref=f"SM{uuid.uuid4().hex}",
                now=utcnow(),
            )

    results = _at_once(*(lambda n=n: text_in(n) for n in range(HELP_MESSAGES_KEPT + 10)))
    assert results == [None] * (HELP_MESSAGES_KEPT + 10)
    with factory() as session:
        kept = session.scalar(select(func.count()).select_from(HelpMessage))
    assert kept == HELP_MESSAGES_KEPT


def test_a_duty_notice_marked_told_while_a_consul_takes_the_case_never_deadlocks(
    factory, monkeypatch
):
    """A review: the notice's check-ins were marked told newest first, a consul's take locks
    them oldest first, and PostgreSQL aborted the marking: the notice, already sent, went
    again a minute later. Both now lock them in advisory order."""
    advisories, people = _seed(factory)
    monkeypatch.setattr(duty, "send_notice", lambda notice, **_: True)
    settings = SimpleNamespace(pages_duty_staff=True)
    for person in people:
        with factory() as session:
            ids = list(session.scalars(select(Checkin.id).where(Checkin.citizen_id == person.id)))

        def tell(ids=ids):
            return duty.tell_duty(
                factory, vault=VAULT, notifiers={}, settings=settings, checkin_ids=ids, now=utcnow()
            )

        def take(person=person):
            with factory.begin() as session:
                return take_help(
                    session,
                    advisory=session.get(Advisory, advisories[0].id),
                    citizen_public_id=person.public_id,
                    staff="kim",
                    now=utcnow(),
                ).taken_by

        assert _at_once(tell, take) == [1, "kim"]
    with factory() as session:
        untold = session.scalar(
            select(func.count()).select_from(Checkin).where(Checkin.duty_notified_at.is_(None))
        )
    assert untold == 0


def test_a_code_verified_while_its_record_is_erased_never_deadlocks(
    factory, database_url, monkeypatch
):
    """A review: the code's try was locked, then the record; an erasure locks the record,
    then deletes the code. Each waited on the other. The try now locks the record first."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's race: SQLite has one writer at a time (BEGIN IMMEDIATE)")
    with factory.begin() as session:
        person = Citizen(public_id=str(uuid.uuid4()), language="en", consent_at=utcnow())
        session.add(person)
        session.flush()
        code = verification.issue_code(
            session,
            vault=VAULT,
            citizen=person,
            channel="sms",
            address="+821055550123",
            now=utcnow(),
        ).code
    failed: list[BaseException] = []
    tried = threading.Event()
    stopped_elsewhere = verification._stopped_elsewhere

    def between_the_try_and_the_record(*args, **kwargs):
        # The try is taken: let the erasure start, and wait until it waits on a lock.
        tried.set()
        until_one_waits_on_a_lock(factory, why_not=lambda: failed)
        return stopped_elsewhere(*args, **kwargs)

    monkeypatch.setattr(verification, "_stopped_elsewhere", between_the_try_and_the_record)

    eraser = _eraser(factory, person.id, failed, after=tried)
    eraser.start()
    with factory.begin() as session:
        citizen = session.get(Citizen, person.id)
        assert citizen is not None
        checked = verification.check_code(
            session,
            vault=VAULT,
            citizen=citizen,
            channel="sms",
            code=code,
            now=utcnow(),
            count_try=lambda _: None,
            check_tries=lambda _: None,
            forget_tries=lambda _: None,
        )
    eraser.join(timeout=60)
    assert checked.verified and failed == []
    with factory() as session:
        erased = session.get(Citizen, person.id)
        assert erased is not None and erased.status == "erased" and erased.phone_sealed is None
