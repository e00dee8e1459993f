"""The roll call of an advisory: everyone it asked "are you safe?", with the answer in force,
counted by answer and by the country of the place that matched; and staff starting a check-in
round for an advisory of any level."""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, and_, case, func, or_, select, union, update
from sqlalchemy.orm import Session

from service.advisories import reach
from service.advisories.levels import asks_checkin
from service.advisories.models import Advisory
from service.advisories.service import draft_of
from service.checkin.answers import asks, record_confirmed_safe
from service.checkin.models import Checkin, CheckinAnswer
from service.citizens.models import Citizen, CitizenPlace, established
from service.citizens.service import Registry, masked_contacts
from service.errors import Conflict, NotFound, TooManyRequests
from service.ledger import checkins, priority, states
from service.ledger.models import Alert

Standing = Literal["safe", "help", "no_answer", "unreachable"]
STANDINGS: tuple[Standing, ...] = ("safe", "help", "no_answer", "unreachable")
# Every send of the check-in ended without reaching the citizen.
_NOT_REACHED = (states.FAILED, states.UNDELIVERED)
# The least time between two roll-call rounds of one advisory.
ROUND_GAP = timedelta(minutes=10)
# A send that may still reach them, or did.
_MAY_REACH = (*states.OPEN, states.SENT, states.DELIVERED)


@dataclass(frozen=True)
class RollCallRow:
    citizen_id: str
    contact: str | None  # masked
    answer: Standing
    channel: str | None
    answered_at: datetime | None
    country: str | None
    sms_opted_out: bool  # their number sent STOP: no SMS reaches them
    taken_by: str | None  # the consul handling them
    taken_at: datetime | None
    erased: bool  # they erased their record since: nothing is left to call or reveal
    # A safe pressed on a page while their help is in force: call them to confirm.
    safe_said_at: datetime | None
    confirmed_by: str | None  # the consul who reached them and found them safe
    # Their newest help answer in force under any advisory (drills apart): what closing the
    # case names, as read. A help pressed under another advisory's page shows only here.
    latest_help_at: datetime | None
    latest_help_advisory: str | None  # the advisory it answers (its public id)
    # A verified phone, or a day with a verified contact (citizens.models.ESTABLISHED_AFTER):
    # else a record anyone can make, whose cry staff weigh against the others'.
    established: bool = True


@dataclass(frozen=True)
class RollCall:
    exercise: bool  # a drill's roll call, to be kept apart from real ones
    counts: dict[str, int]
    by_country: dict[str, dict[str, int]]
    total: int  # rows matching the filters
    items: list[RollCallRow]
    # Its rows were forgotten (service/checkin/retention.py), from then: the counts were kept.
    rows_forgotten_at: datetime | None = None


def roll_call(
    session: Session,
    *,
    advisory: Advisory,
    registry: Registry,
    answer: Standing | None,
    country: str | None,
    limit: int,
    taken: bool | None = None,
    offset: int,
    now: datetime,
) -> RollCall:
    """Who was asked about this advisory and where each stands; counts cover everyone asked,
    `items` the page of those matching the filters (by answer, by country, taken by a consul
    or not), in citizen order,
    each saying whether their number sent STOP. Their words are not here: free text may hold
    any contact or address, so it comes with the audited reveal, like their contacts.

    Every open console asks for this every 3 s, and an advisory may have asked hundreds of
    thousands: the standings are worked out by the database and counted as arrays, and only
    the page's rows are read in full."""
    if advisory.ledger_kept is not None:
        kept = advisory.ledger_kept
        return RollCall(
            exercise=advisory.exercise,
            counts=kept["roll_call"]["counts"],
            by_country=kept["roll_call"]["by_country"],
            total=0,
            items=[],
            rows_forgotten_at=advisory.rows_forgotten_at,
        )
    found = _standings(session, advisory=advisory, now=now)
    counts, by_country = _counted(found)
    chosen = np.ones(len(found.ids), dtype=bool)
    if answer is not None:
        chosen &= found.codes == STANDINGS.index(answer)
    if country is not None:
        chosen &= found.countries == country
    if taken is not None:
        chosen &= found.taken == taken
    at = np.flatnonzero(chosen)[offset : offset + limit]
    page = [int(cid) for cid in found.ids[at]]
    citizens = {c.id: c for c in session.scalars(select(Citizen).where(Citizen.id.in_(page)))}
    answers = {
        row.citizen_id: row
        for row in session.execute(
            select(
                Checkin.citizen_id,
                Checkin.answer,
                Checkin.channel,
                Checkin.answered_at,
                Checkin.taken_by,
                Checkin.taken_at,
                Checkin.safe_said_at,
                CheckinAnswer.given_by,
            )
            .outerjoin(CheckinAnswer, CheckinAnswer.id == Checkin.answer_id)
            .where(Checkin.advisory_id == advisory.id, Checkin.citizen_id.in_(page))
        )
    }
    # Each page citizen's newest help in force and its advisory (a few rows each at most).
    latest_help: dict[int, tuple[datetime, str]] = {}
    for cid, answered_at, words_at, advisory_public_id in session.execute(
        select(Checkin.citizen_id, Checkin.answered_at, Checkin.words_at, Advisory.public_id)
        .join(Advisory, Advisory.id == Checkin.advisory_id)
        .where(
            Checkin.citizen_id.in_(page),
            Checkin.answer == "help",
            Advisory.exercise == advisory.exercise,
        )
    ):
        at_ = max(answered_at, words_at or answered_at)
        if cid not in latest_help or at_ > latest_help[cid][0]:
            latest_help[cid] = (at_, advisory_public_id)
    items = []
    for index, cid in zip(at, page, strict=True):
        citizen, given = citizens.get(cid), answers.get(cid)
        if citizen is None:  # the record was deleted (by the purge before 0028): counted only
            continue
        masked = masked_contacts(registry, citizen)
        items.append(
            RollCallRow(
                citizen_id=citizen.public_id,
                contact=masked.first_readable,
                # The row's own answer where it has one: an answer may have come between the
                # two statements, and a row must not say "no answer" beside its answer's time.
                answer=given.answer if given else STANDINGS[found.codes[index]],
                channel=given.channel if given else None,
                answered_at=given.answered_at if given else None,
                country=str(found.countries[index]) or None,
                sms_opted_out=citizen.sms_opted_out_at is not None,
                taken_by=given.taken_by if given else None,
                taken_at=given.taken_at if given else None,
                erased=citizen.status == "erased",
                safe_said_at=given.safe_said_at if given else None,
                confirmed_by=given.given_by if given else None,
                latest_help_at=latest_help[cid][0] if cid in latest_help else None,
                latest_help_advisory=latest_help[cid][1] if cid in latest_help else None,
                established=established(citizen, now),
            )
        )
    return RollCall(
        exercise=advisory.exercise,
        counts=counts,
        by_country=by_country,
        total=int(chosen.sum()),
        items=items,
    )


def figures_to_keep(session: Session, *, advisory: Advisory, now: datetime) -> dict[str, Any]:
    """The roll call's counts (by answer, and by country), as kept when its rows are forgotten
    (JSON)."""
    counts, by_country = _counted(_standings(session, advisory=advisory, now=now))
    return {"counts": counts, "by_country": by_country}


def _counted(found: "_Standings") -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    counts = _by_standing(np.bincount(found.codes, minlength=4))
    by_country: dict[str, dict[str, int]] = {}
    if len(found.ids):
        keys = np.where(found.countries == "", "??", found.countries)
        names, where = np.unique(keys, return_inverse=True)
        grid = np.bincount(where * 4 + found.codes, minlength=len(names) * 4).reshape(-1, 4)
        by_country = {str(name): _by_standing(row) for name, row in zip(names, grid, strict=True)}
    return counts, by_country


def _by_standing(counted: np.ndarray) -> dict[str, int]:
    return {standing: int(n) for standing, n in zip(STANDINGS, counted, strict=True)}


@dataclass(frozen=True)
class _Standings:
    """Everyone asked (or who answered), as arrays in citizen order."""

    ids: np.ndarray  # citizen ids, ascending
    codes: np.ndarray  # each one's standing, as an index into STANDINGS
    taken: np.ndarray  # a consul handles them
    countries: np.ndarray  # the matched place's country code, "" when unknown


def _standings(session: Session, *, advisory: Advisory, now: datetime) -> _Standings:
    # Those asked: not reached (every send failed) or not answered, until an answer says more.
    unreached = and_(
        func.max(case((Alert.status.in_(_MAY_REACH), 1), else_=0)) == 0,
        func.max(case((Alert.status.in_(_NOT_REACHED), 1), else_=0)) == 1,
    )
    # Core, not ORM, execution: the ORM's row loading doubled the cost at 200,000 rows.
    connection = session.connection()
    asked = _table(
        connection.execute(
            select(Alert.citizen_id, case((unreached, _UNREACHABLE), else_=_NO_ANSWER))
            .where(
                Alert.advisory_id == advisory.id,
                asks(session, advisory.id),
                # Not asked at all: left outside a narrowed area before their ask went, or
                # erased first (a probe counted them as not answering).
                # (One whose try's outcome was lost may have reached them: it counts as an ask.)
                or_(Alert.status.not_in(states.WITHDRAWN), Alert.outcome_unknown),
            )
            .group_by(Alert.citizen_id)
        ).all(),
        columns=2,
    )
    # The answers, of everyone who gave one: also of someone no longer asked in the ledger (a
    # roll call's row since gone), who still counts.
    answered = _table(
        connection.execute(
            select(
                Checkin.citizen_id,
                case((Checkin.answer == "safe", _SAFE), else_=_HELP),
                case((Checkin.taken_by.is_(None), 0), else_=1),
            ).where(Checkin.advisory_id == advisory.id)
        ).all(),
        columns=3,
    )
    ids = np.union1d(asked[:, 0], answered[:, 0])
    codes = np.full(len(ids), _NO_ANSWER, dtype=np.int64)
    codes[np.searchsorted(ids, asked[:, 0])] = asked[:, 1]
    at = np.searchsorted(ids, answered[:, 0])
    codes[at] = answered[:, 1]
    taken = np.zeros(len(ids), dtype=bool)
    taken[at] = answered[:, 2] == 1
    return _Standings(
        ids=ids,
        codes=codes,
        taken=taken,
        countries=_countries(session, advisory=advisory, ids=ids, now=now),
    )


def _table(rows: Sequence[Sequence[int]], *, columns: int) -> np.ndarray:
    """Rows of integers as a 2-D array (numpy's own conversion of result rows is slow)."""
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=columns * len(rows))
    return flat.reshape(-1, columns)


_SAFE, _HELP, _NO_ANSWER, _UNREACHABLE = (STANDINGS.index(s) for s in STANDINGS)


# Citizen ids in ascending order, and the country each is counted in ("" when unknown).
Countries = tuple[np.ndarray, np.ndarray]


class _MatchedCountries:
    """The country each citizen is counted in (see _countries), per advisory revision, kept
    for COUNTRIES_KEPT_S: matching an advisory again took a second at 200,000 citizens, and
    every open console asks for the roll call every few seconds. A citizen who moved meanwhile
    is counted where they were until then."""

    def __init__(self, *, kept_s: float, most: int) -> None:
        self._kept_s, self._most = kept_s, most
        self._lock = threading.Lock()
        self._maps: OrderedDict[tuple[str, int], tuple[float, Countries]] = OrderedDict()
        self._building: dict[tuple[str, int], threading.Lock] = {}

    def kept(self, key: tuple[str, int], build: Callable[[], Countries]) -> Countries:
        """What is kept for `key`, built by `build` when missing or too old: by one caller at
        a time (the others of this process wait for it and take what it built, so that the
        consoles asking when it lapses do not match the advisory once each)."""
        with self._lock:
            found = self._fresh(key)
            if found is not None:
                return found
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                found = self._fresh(key)
            if found is None:
                found = build()
                with self._lock:
                    self._maps[key] = (time.monotonic(), found)
                    self._maps.move_to_end(key)
                    while len(self._maps) > self._most:
                        self._maps.popitem(last=False)
        with self._lock:
            self._building.pop(key, None)
        return found

    def _fresh(self, key: tuple[str, int]) -> Countries | None:
        kept = self._maps.get(key)
        if kept is None or time.monotonic() - kept[0] > self._kept_s:
            return None
        self._maps.move_to_end(key)  # the least recently used goes first
        return kept[1]


COUNTRIES_KEPT_S = 30.0
# Four advisories at most: 16 bytes a citizen, so 64 MB for four that asked a million each.
_matched_countries = _MatchedCountries(kept_s=COUNTRIES_KEPT_S, most=4)


def _countries(
    session: Session, *, advisory: Advisory, ids: np.ndarray, now: datetime
) -> np.ndarray:
    """The country of the place that matched each citizen (as the matches listing computes it);
    for one the advisory no longer reaches (it has ended, or they left), where they are now.
    Kept per revision: those asked since are looked up where they are now."""
    if not len(ids):
        return np.full(0, "", dtype="<U2")
    # The public id: a database's ids may be used again (a test's rolled-back transaction).
    key = (advisory.public_id, advisory.revision)

    def build() -> Countries:
        found = reach.reach_of_draft(session, draft_of(advisory), now=now)
        places = found.places
        pairs = sorted(found.place_of.items()) if places is not None else []
        matched = (
            np.array([cid for cid, _ in pairs], dtype=np.int64),
            np.array([str(places.countries[i]) if places else "" for _, i in pairs], dtype="<U2"),
        )
        countries, hit = _looked_up(matched, ids)
        _fill_where_now(session, advisory=advisory, ids=ids, countries=countries, hit=hit)
        # Everyone asked, matched or not: an ended advisory matches nobody, and its roll call
        # must not read every citizen's places at each poll.
        known = np.union1d(matched[0], ids)
        known_countries = np.full(len(known), "", dtype="<U2")
        known_countries[np.searchsorted(known, ids)] = countries
        only_matched = ~np.isin(matched[0], ids)
        known_countries[np.searchsorted(known, matched[0][only_matched])] = matched[1][only_matched]
        return known, known_countries

    countries, hit = _looked_up(_matched_countries.kept(key, build), ids)
    # Asked since it was built (by this call, or by another while this one waited).
    _fill_where_now(session, advisory=advisory, ids=ids, countries=countries, hit=hit)
    return countries


def _looked_up(
    kept: tuple[np.ndarray, np.ndarray], ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The kept country of each of `ids` ("" where none), and which of them were kept."""
    kept_ids, kept_countries = kept
    countries = np.full(len(ids), "", dtype="<U2")
    at = np.searchsorted(kept_ids, ids)
    hit = at < len(kept_ids)
    hit[hit] = kept_ids[at[hit]] == ids[hit]
    countries[hit] = kept_countries[at[hit]]
    return countries, hit


def _fill_where_now(
    session: Session, *, advisory: Advisory, ids: np.ndarray, countries: np.ndarray, hit: np.ndarray
) -> None:
    missing = ids[~hit]
    if len(missing):
        where_now = _where_now(session, advisory=advisory, citizen_ids=missing)
        countries[~hit] = [where_now.get(int(cid)) or "" for cid in missing]


def _where_now(
    session: Session, *, advisory: Advisory, citizen_ids: np.ndarray
) -> dict[int, str | None]:
    """The country of each citizen's first place (the current one first)."""
    chosen: ColumnElement[bool]
    if len(citizen_ids) <= _FEW_IDS:
        chosen = CitizenPlace.citizen_id.in_([int(cid) for cid in citizen_ids])
    else:
        # One statement over the advisory's own ledger rows and answers (a list of many ids
        # as parameters costs more to send than the query takes). One IN over a UNION:
        # PostgreSQL cannot join an IN within an OR, and scanned the ledger per place.
        asked = select(Alert.citizen_id).where(Alert.advisory_id == advisory.id)
        answered = select(Checkin.citizen_id).where(Checkin.advisory_id == advisory.id)
        chosen = CitizenPlace.citizen_id.in_(union(asked, answered))
    rows = session.execute(
        select(CitizenPlace.citizen_id, CitizenPlace.country)
        .where(chosen)
        .order_by(CitizenPlace.citizen_id, CitizenPlace.kind, CitizenPlace.id)
    )
    where_now: dict[int, str | None] = {}
    for cid, country in rows:
        where_now.setdefault(cid, country)
    return where_now


_FEW_IDS = 2_000


@dataclass(frozen=True)
class Round:
    round: int
    asked: int  # citizens
    queued: int  # messages


def start_round(session: Session, *, advisory: Advisory, now: datetime) -> Round:
    """Ask "are you safe?" of everyone this advisory alerted, on every channel it alerted them
    on, as the next round: ahead of any advisory in the queue when the advisory asks by itself
    (level 3 and up), else in its own class. Not for a cancelled advisory."""
    if advisory.status == "cancelled":
        raise Conflict("the advisory is cancelled: there is nothing to ask about")
    if advisory.ledger_kept is not None:
        raise Conflict(
            "the advisory's alerts were deleted under the retention rule: nobody is left to ask"
        )
    # One conditional write: two consuls starting a round at once start one.
    opened = session.execute(
        update(Advisory)
        .where(
            Advisory.id == advisory.id,
            or_(Advisory.round_started_at.is_(None), Advisory.round_started_at <= now - ROUND_GAP),
        )
        .values(round_started_at=now)
        .execution_options(synchronize_session=False)
    )
    if not opened.rowcount:
        # Each round texts everyone at the top priority: not again while one has just gone
        # out (a double click, or a key used to spend our SMS), and asking again on its own
        # is the escalation job's.
        started = session.scalar(
            select(Advisory.round_started_at).where(Advisory.id == advisory.id)
        )
        assert started is not None
        wait = int((started + ROUND_GAP - now).total_seconds()) + 1
        raise TooManyRequests(
            f"the last round was started at {started:%H:%M} UTC: the next may start "
            f"{int(ROUND_GAP.total_seconds() // 60)} minutes after it",
            retry_after_s=wait,
        )
    last = session.scalar(
        select(func.max(Alert.checkin_round)).where(Alert.advisory_id == advisory.id)
    )
    number = (last or 0) + 1
    content = draft_of(advisory)
    queued = checkins.enqueue_round(
        session,
        advisory_id=advisory.id,
        revision=advisory.revision,
        checkin_round=number,
        urgency=priority.of_roll_call(
            advisory.level, asks=asks_checkin(advisory.level, severity=content.severity)
        ),
        now=now,
    )
    asked = session.scalar(
        select(func.count(func.distinct(Alert.citizen_id))).where(
            Alert.advisory_id == advisory.id, Alert.checkin_round == number
        )
    )
    return Round(round=number, asked=asked or 0, queued=queued)


@dataclass(frozen=True)
class Taken:
    citizen_id: str
    taken_by: str | None
    taken_at: datetime | None
    advisories: list[str]  # every advisory whose help answer of theirs this took or released


def take_help(
    session: Session, *, advisory: Advisory, citizen_public_id: str, staff: str, now: datetime
) -> Taken:
    """A consul takes a citizen who needs help: every help answer of theirs (one SMS answers
    every advisory that asked; drills apart from real ones) shows the consul's name, so nobody
    else calls them meanwhile. Taking again is harmless; a citizen another consul has (under
    any advisory) is a 409 naming them: of two consuls at once, one wins."""
    citizen_id, answer, status = _answer_of(
        session, advisory=advisory, citizen_public_id=citizen_public_id
    )
    if status == "erased":
        raise Conflict("they erased their record: there is no contact left to call")
    rows, mine, holder = _help_rows(
        session, advisory=advisory, citizen_id=citizen_id, answer=answer, staff=staff, done="taken"
    )
    if holder is not None:
        since = f" at {holder.taken_at:%Y-%m-%d %H:%M} UTC" if holder.taken_at else ""
        raise Conflict(f"already taken by {holder.taken_by}{since}")
    for row in rows:
        if row.answer == "help" and row.taken_by is None:
            row.taken_by, row.taken_at = staff, now
    session.flush()
    return Taken(
        citizen_public_id, staff, mine.taken_at, _taken_advisories(session, citizen_id, staff)
    )


def release_help(
    session: Session,
    *,
    advisory: Advisory,
    citizen_public_id: str,
    staff: str,
    any_holder: bool,
) -> Taken:
    """Give a citizen back to the list of help answers nobody has taken (whatever their answer
    is now, and whether or not they erased their record since): by whoever took them, or
    (`any_holder`) an admin when that consul is gone."""
    citizen_id = _answer_of(session, advisory=advisory, citizen_public_id=citizen_public_id)[0]
    rows = _lock_rows(session, citizen_id, exercise=advisory.exercise)
    holder = next((row.taken_by for row in rows if row.advisory_id == advisory.id), None)
    if holder is None:
        return Taken(citizen_public_id, None, None, [])
    if holder != staff and not any_holder:
        raise Conflict(f"taken by {holder}: only they or an admin can give it back")
    released = _taken_advisories(session, citizen_id, holder)
    for row in rows:
        if row.taken_by == holder:
            row.taken_by = row.taken_at = None
    session.flush()
    return Taken(citizen_public_id, None, None, released)


@dataclass(frozen=True)
class ConfirmedSafe:
    citizen_id: str
    confirmed_by: str
    confirmed_at: datetime
    advisories: list[str]  # every advisory whose help answer of theirs this closed


def confirm_safe(
    session: Session,
    *,
    advisory: Advisory,
    citizen_public_id: str,
    staff: str,
    any_holder: bool,
    seen_help_at: datetime,
    now: datetime,
) -> ConfirmedSafe:
    """A consul who reached a citizen who needs help (a call, a visit) records them safe: every
    help answer of theirs (real ones, or a drill's) becomes a safe given by the consul, and the
    case closes. Only a help answer is confirmed (409 otherwise); a case another consul holds
    is theirs to close, or an admin's (409 naming them). A citizen who erased their record
    since can still be confirmed, or their help would stay open for ever.

    `seen_help_at` is the roll-call row's `latest_help_at` the consul read: their newest help
    answer under any advisory. Another (a second "2", which pages nobody while help is in
    force, or a help pressed under another advisory's page) is a 409, so a worse cry sent
    during the call is read, not closed unseen; so is any time but that one."""
    citizen_id, answer, _status = _answer_of(
        session, advisory=advisory, citizen_public_id=citizen_public_id
    )
    rows, _mine, holder = _help_rows(
        session,
        advisory=advisory,
        citizen_id=citizen_id,
        answer=answer,
        staff=staff,
        done="confirmed safe",
    )
    if holder is not None and not any_holder:
        raise Conflict(f"taken by {holder.taken_by}: only they or an admin can confirm them safe")
    helps = [row for row in rows if row.answer == "help"]
    newest = max(max(row.answered_at, row.words_at or row.answered_at) for row in helps)
    if newest != seen_help_at:
        raise Conflict(
            f"their latest help answer is at {newest:%Y-%m-%d %H:%M:%S} UTC, not the one named: "
            "read it (the roll call, and their words with the reveal) before confirming them safe"
        )
    record_confirmed_safe(session, checkins=rows, staff=staff, now=now)
    closed = session.scalars(
        select(Advisory.public_id)
        .where(Advisory.id.in_([row.advisory_id for row in helps]))
        .order_by(Advisory.id)
    )
    return ConfirmedSafe(citizen_public_id, staff, now, list(closed))


def _help_rows(
    session: Session, *, advisory: Advisory, citizen_id: int, answer: str, staff: str, done: str
) -> tuple[list[Checkin], Checkin, Checkin | None]:
    """The citizen's answers in force, locked, when their answer to this advisory is help as
    read and still once locked (409 otherwise): with this advisory's, and one another consul
    holds (None when nobody else does)."""
    if answer != "help":
        raise Conflict(f"their answer is {answer!r}: only a help answer is {done}")
    rows = _lock_rows(session, citizen_id, exercise=advisory.exercise)
    mine = next((row for row in rows if row.advisory_id == advisory.id), None)
    if mine is None or mine.answer != "help":
        raise Conflict(f"their answer is no longer help: only a help answer is {done}")
    holder = next((row for row in rows if row.taken_by not in (None, staff)), None)
    return rows, mine, holder


def _lock_rows(session: Session, citizen_id: int, *, exercise: bool) -> list[Checkin]:
    """The citizen's answers in force (real ones, or drills), locked in advisory order: the
    order the SMS webhook and the check-in page lock them in, so none waits on another."""
    return list(
        session.scalars(
            select(Checkin)
            .join(Advisory, Advisory.id == Checkin.advisory_id)
            .where(
                Checkin.citizen_id == citizen_id,
                Advisory.exercise == exercise,
                # Not one whose rows are being forgotten (retention.py): written meanwhile, an
                # answer there would outlive the deletion (a review).
                Advisory.ledger_kept.is_(None),
            )
            .order_by(Checkin.advisory_id)
            .with_for_update(of=Checkin)
            .execution_options(populate_existing=True)
        )
    )


def _answer_of(
    session: Session, *, advisory: Advisory, citizen_public_id: str
) -> tuple[int, str, str]:
    """(The citizen's id, their answer in force, their record's status)."""
    if "\x00" in citizen_public_id:  # no id has one, and PostgreSQL refuses it in text
        raise NotFound("no answer from this citizen to this advisory's check-in")
    found = session.execute(
        select(Citizen.id, Checkin.answer, Citizen.status)
        .join(Checkin, Checkin.citizen_id == Citizen.id)
        .where(Citizen.public_id == citizen_public_id, Checkin.advisory_id == advisory.id)
    ).first()
    if found is None:
        raise NotFound("no answer from this citizen to this advisory's check-in")
    return found[0], found[1], found[2]


def _taken_advisories(session: Session, citizen_id: int, staff: str) -> list[str]:
    return list(
        session.scalars(
            select(Advisory.public_id)
            .join(Checkin, Checkin.advisory_id == Advisory.id)
            .where(Checkin.citizen_id == citizen_id, Checkin.taken_by == staff)
            .order_by(Advisory.id)
        )
    )
