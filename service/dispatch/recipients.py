"""What the dispatcher reads for a claimed batch: each advisory revision's words, the
advisory's state now, and each citizen's language and contacts (opened from the vault)."""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidTag
from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session

from service.advisories.models import Advisory, AdvisoryRevision
from service.audit import actors
from service.citizens.models import Citizen, CitizenPlace
from service.dispatch.content import AlertContent
from service.dispatch.quiet_hours import Place, zone_of
from service.geo.matching import CURRENT, Today, day_number
from service.privacy import PersonalDataVault


@dataclass(frozen=True)
class AdvisoryState:
    status: str
    revision: int
    expires: datetime | None
    alerts_citizens: bool
    effective: datetime


@dataclass(frozen=True)
class Recipient:
    erased: bool
    language: str
    address: str | None  # on the channel being sent, opened from the vault
    reachable: frozenset[str]  # channels the citizen has a (verified) contact for
    # Countries the citizen is registered in only by country (no point): an area covering part
    # of one reaches them at urgent levels, and their alert says so.
    known_only_by: frozenset[str] = frozenset()
    # Their own points (lon, lat, country, first and last day; matching.CURRENT for a current
    # location), current or in a stay not ended: an advisory that reaches one reached them by
    # it, not only by country (no note then).
    points: tuple[tuple[float, float, str, int, int], ...] = ()
    sms_opted_out: bool = False  # replied STOP: carriers block our texts to the number
    phone_hash: str | None = None  # their number's keyed hash (the registry's blind index)
    quiet: tuple[str, str] | None = None  # quiet hours ("22:00", "07:00"); None: none
    place: Place | None = None  # where the citizen is now, whose clock the quiet hours follow
    # Their contact on the channel is sealed under a data secret no longer listed (a rotation
    # that dropped it before `anjeon reseal` was done): their alert fails, the batch goes on.
    unreadable: bool = False


class ContentCache:
    """A revision's words never change: keep the recent ones between batches."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[tuple[int, int], AlertContent] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()  # the SMS and e-mail lanes share it

    def load(self, session: Session, keys: set[tuple[int, int]]) -> dict:
        with self._lock:
            return self._load(session, keys)

    def _load(self, session: Session, keys: set[tuple[int, int]]) -> dict:
        missing = keys - self._items.keys()
        if missing:
            rows = session.execute(
                select(AdvisoryRevision, Advisory.public_id, Advisory.issued_by)
                .join(Advisory, Advisory.id == AdvisoryRevision.advisory_id)
                .where(
                    tuple_(AdvisoryRevision.advisory_id, AdvisoryRevision.revision).in_(
                        list(missing)
                    )
                )
            ).all()
            for revision, public_id, issued_by in rows:
                self._items[(revision.advisory_id, revision.revision)] = _content(
                    revision, public_id, issued_by=issued_by
                )
        # Taken before the eviction: a batch naming more revisions than the cache holds lost
        # some it had just loaded, and their alerts failed as "advisory not found" (a review).
        found = {key: self._items[key] for key in keys if key in self._items}
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return found


def shown_source(issued_by: str) -> str:
    """Whom an alert names as its source beside the ministry: a feed's name ("USGS"); never a
    staff key's name, which is for the audit log, not for the public (a CAP document imported
    by a consul once showed their key's name on its public page)."""
    return issued_by.removeprefix(actors.FEED) if issued_by.startswith(actors.FEED) else ""


def _content(revision: AdvisoryRevision, public_id: str, *, issued_by: str) -> AlertContent:
    data = revision.content
    expires = data.get("expires")
    return AlertContent(
        advisory_public_id=public_id,
        revision=revision.revision,
        kind="cancel"
        if revision.change == "cancelled"
        else "update"
        if revision.revision > 1
        else "new",
        level=data["level"],
        title=data.get("title") or {},
        message=data.get("message") or {},
        area=data.get("area") or {},
        source=shown_source(issued_by),
        expires=datetime.fromisoformat(expires) if expires else None,
        severity=data.get("severity") or "",
        urgency=data.get("urgency") or "",
        exercise=bool(data.get("exercise")),
    )


def advisory_states(session: Session, ids: set[int]) -> dict[int, AdvisoryState]:
    rows = session.execute(
        select(
            Advisory.id,
            Advisory.status,
            Advisory.revision,
            Advisory.expires,
            Advisory.alerts_citizens,
            Advisory.effective,
        ).where(Advisory.id.in_(ids))
    ).all()
    return {row[0]: AdvisoryState(*row[1:]) for row in rows}


def recipients(
    session: Session,
    ids: set[int],
    *,
    channel: str,
    vault: PersonalDataVault,
    now: datetime | None = None,
) -> dict[int, Recipient]:
    """Each citizen's language and address on `channel` (only that one is decrypted), quiet
    hours, and where they are `now` (_places_now)."""
    rows = session.execute(
        select(
            Citizen.id,
            Citizen.status,
            Citizen.language,
            Citizen.phone_sealed,
            Citizen.email_sealed,
            Citizen.sms_opted_out_at,
            Citizen.quiet_from,
            Citizen.quiet_to,
            Citizen.phone_hash,
        ).where(Citizen.id.in_(ids))
    ).all()
    here = _places_now(session, ids, now) if now is not None else {}
    only: dict[int, set[str]] = {}
    for cid, country in session.execute(
        select(CitizenPlace.citizen_id, CitizenPlace.country).where(
            CitizenPlace.citizen_id.in_(ids), CitizenPlace.lon.is_(None)
        )
    ):
        only.setdefault(cid, set()).add(country)
    points = _points_of(session, set(only), Today.at(now)) if only and now is not None else {}
    found = {}
    for cid, status, language, phone, email, opted_out_at, quiet_from, quiet_to, phone_hash in rows:
        sealed = {"sms": ("phone", phone), "email": ("email", email)}
        field, blob = sealed[channel]
        address, unreadable = None, False
        if blob:
            try:
                address = vault.open(field, blob)
            except (InvalidTag, ValueError):
                # A review: one such value failed every batch that held the citizen.
                vault.report_unopened(field, blob, citizen=cid)
                unreadable = True
        found[cid] = Recipient(
            erased=status == "erased",
            language=language,
            address=address,
            unreadable=unreadable,
            reachable=frozenset(c for c, (_, b) in sealed.items() if b is not None),
            known_only_by=frozenset(only.get(cid, ())),
            points=tuple(points.get(cid, ())),
            sms_opted_out=opted_out_at is not None,
            phone_hash=phone_hash,
            quiet=(quiet_from, quiet_to) if quiet_from and quiet_to else None,
            place=here.get(cid),
        )
    return found


def _points_of(
    session: Session, ids: set[int], today: Today
) -> dict[int, list[tuple[float, float, str, int, int]]]:
    """The points of these citizens (each also known only by some country): current locations
    and stays not ended, with their days as matching reads them."""
    found: dict[int, list[tuple[float, float, str, int, int]]] = {}
    for cid, kind, lon, lat, country, starts, ends in session.execute(
        select(
            CitizenPlace.citizen_id,
            CitizenPlace.kind,
            CitizenPlace.lon,
            CitizenPlace.lat,
            CitizenPlace.country,
            CitizenPlace.starts_on,
            CitizenPlace.ends_on,
        )
        .where(
            CitizenPlace.citizen_id.in_(ids),
            CitizenPlace.lon.is_not(None),
            or_(CitizenPlace.kind == "current", CitizenPlace.ends_on >= today.first_date_on),
        )
        .order_by(CitizenPlace.id)
    ):
        days = (CURRENT, CURRENT) if kind == "current" else (day_number(starts), day_number(ends))
        found.setdefault(cid, []).append((lon, lat, country or "", *days))
    return found


def _places_now(session: Session, ids: set[int], now: datetime) -> dict[int, Place]:
    """Where each citizen is now: of their current place and the stays under way (by each
    stay's own local date: its dates are the traveller's), the one written last. Registration
    writes the current place before the stays, so a trip under way wins over the place
    registered (usually home, kept while they travel); a current place moved during the trip
    wins over the trip."""
    today = now.date()
    rows = session.execute(
        select(
            CitizenPlace.citizen_id,
            CitizenPlace.kind,
            CitizenPlace.lat,
            CitizenPlace.lon,
            CitizenPlace.country,
            CitizenPlace.starts_on,
            CitizenPlace.ends_on,
        )
        .where(
            CitizenPlace.citizen_id.in_(ids),
            or_(
                CitizenPlace.kind == "current",
                # A day either side of the UTC date: the local one is decided below.
                and_(
                    CitizenPlace.starts_on <= today + timedelta(days=1),
                    CitizenPlace.ends_on >= today - timedelta(days=1),
                ),
            ),
        )
        .order_by(CitizenPlace.id)  # the last written wins
    ).all()
    found: dict[int, Place] = {}
    for cid, kind, lat, lon, country, starts, ends in rows:
        place = Place(lat=lat, lon=lon, country=country)
        if kind != "current" and not starts <= _local_date(place, now) <= ends:
            continue
        found[cid] = place
    return found


def _local_date(place: Place, now: datetime) -> date:
    zone = zone_of(place)
    return now.astimezone(ZoneInfo(zone)).date() if zone is not None else now.date()
