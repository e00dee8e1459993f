"""Active advisories as matching targets: parsed and prepared once per (advisory, revision),
and indexed by bounding box so that one citizen is checked only against nearby advisories."""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.advisories.models import Advisory
from service.geo import matching, subdivisions
from service.geo.areas import Area, area_from_json

_CACHE_SIZE = 20_000
_areas: "OrderedDict[tuple[int, int, datetime], Area]" = OrderedDict()


@dataclass(frozen=True)
class Live:
    """An advisory that may alert now (active, for citizens, not expired)."""

    id: int
    revision: int
    effective: datetime
    expires: datetime | None
    # Part of the cache key: an id can come back after a rolled-back insert (SQLite reuses the
    # highest rowid), a timestamp cannot.
    updated_at: datetime
    level: str  # what its alerts' urgency class follows (a new level is a new revision)
    exercise: bool = False  # a drill: only citizens who opted in (citizen.exercises)

    @property
    def key(self) -> tuple[int, int, datetime]:
        return (self.id, self.revision, self.updated_at)


_ALERTING = (Advisory.status == "active", Advisory.alerts_citizens.is_(True))
_live: tuple[tuple, list[Live]] | None = None
_SUMMARY = select(
    func.count(),
    func.sum(Advisory.id),
    func.sum(Advisory.revision),
    func.max(Advisory.updated_at),
    func.min(Advisory.effective),
    func.max(Advisory.effective),
    func.min(Advisory.expires),
    func.max(Advisory.expires),
).where(*_ALERTING)


def live_advisories(session: Session, *, now: datetime) -> list[Live]:
    """Advisories that may alert now, in id order. Reading a thousand rows costs a new citizen's
    registration more than its matching: they are read again only when a one-row summary of the
    alerting set changes (a new, revised, cancelled or expired advisory changes the count, the
    sums, or the bounds of the times), and expiry is applied here."""
    global _live
    # Core, not the ORM, and a statement built once: this runs on every registration.
    summary = tuple(session.connection().execute(_SUMMARY).one())
    if _live is None or _live[0] != summary:
        rows = session.execute(
            select(
                Advisory.id,
                Advisory.revision,
                Advisory.effective,
                Advisory.expires,
                Advisory.updated_at,
                Advisory.level,
                Advisory.exercise,
            )
            .where(*_ALERTING)
            .order_by(Advisory.id)  # the target index refers to positions in this order
        )
        _live = (summary, [Live(*row) for row in rows])
    return _unexpired(_live[1], now)


_now_live: tuple[list[Live], list[Live]] | None = None  # (all alerting, those not expired)


def _unexpired(alerting: list[Live], now: datetime) -> list[Live]:
    """Those not expired, as the same list object while none more has expired (time only ever
    takes advisories out), so that what is worked out from it (areas, the index) is reused."""
    global _now_live
    live = [live for live in alerting if live.expires is None or live.expires > now]
    if _now_live is not None and _now_live[0] is alerting and len(_now_live[1]) == len(live):
        return _now_live[1]
    _now_live = (alerting, live)
    return live


def live_of(advisory: Advisory) -> Live:
    return Live(
        advisory.id,
        advisory.revision,
        advisory.effective,
        advisory.expires,
        advisory.updated_at,
        advisory.level,
        advisory.exercise,
    )


def remember(advisory: Advisory) -> None:
    """Parse a just-written advisory's area into the cache."""
    _put(live_of(advisory).key, area_from_json(advisory.area))


_last_areas: tuple[list[Live], list[Area]] | None = None


def areas_of(session: Session, lives: list[Live]) -> list[Area]:
    """Areas for these advisories, from the cache or (one query for the misses) the database;
    the same answer at once for the list live_advisories gave last."""
    global _last_areas
    if _last_areas is not None and _last_areas[0] is lives:
        return _last_areas[1]
    missing = [live.id for live in lives if live.key not in _areas]
    for chunk in range(0, len(missing), 500):
        rows = session.execute(
            select(Advisory.id, Advisory.revision, Advisory.updated_at, Advisory.area).where(
                Advisory.id.in_(missing[chunk : chunk + 500])
            )
        )
        for advisory_id, revision, updated_at, area in rows:
            _put((advisory_id, revision, updated_at), area_from_json(area))
    result = []
    for live in lives:
        _areas.move_to_end(live.key)
        result.append(_areas[live.key])
    _last_areas = (lives, result)
    return result


def target(live: Live, area: Area, *, now: datetime) -> matching.Target:
    return matching.Target.for_window(
        live.id, area, effective=live.effective, expires=live.expires, now=now
    )


def _put(key: tuple[int, int, datetime], area: Area) -> None:
    if area.geometry is not None:
        shapely.prepare(area.geometry)
    _areas[key] = area
    while len(_areas) > _CACHE_SIZE:
        _areas.popitem(last=False)


_MAX_BOXES = 64


def boxes_of(area: Area) -> list[tuple[float, float, float, float]]:
    """Boxes (west, south, east, north) that hold every point the area's shapes can reach
    (a province's 12-nautical-mile sea included); a shape of many parts is boxed whole so that
    the query stays short."""
    boxes = []
    parts = list(area.geometry.geoms) if area.geometry is not None else []
    if len(parts) > _MAX_BOXES:
        bounds = np.array([p.bounds for p in parts])
        west_parts = bounds[:, 2] <= 0  # keep the two sides of ±180 apart
        for side in (west_parts, ~west_parts):
            if side.any():
                b = bounds[side]
                boxes.append((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
    else:
        boxes.extend(tuple(p.bounds) for p in parts)
    for code in area.subdivisions:
        boxes.extend(subdivisions.reach_boxes(code))
    for circle in area.circles:
        reach = matching.circle_reach_deg(circle)
        for west, east in matching.circle_lon_ranges(circle, reach):
            boxes.append((west, circle.lat - reach, east, circle.lat + reach))
    return boxes


class TargetIndex:
    """Bounding boxes of every target's shapes in an STRtree, countries in a dict: which
    targets can possibly reach a handful of places (a new citizen)."""

    def __init__(self, areas: list[Area]) -> None:
        boxes, owners = [], []
        self.by_country: dict[str, list[int]] = {}
        for i, area in enumerate(areas):
            for box in boxes_of(area):
                boxes.append(shapely.box(*box))
                owners.append(i)
            for code in area.countries:
                self.by_country.setdefault(code, []).append(i)
        self.owners = np.array(owners, dtype=np.int64)
        self.tree = shapely.STRtree(boxes)

    def candidates(self, places: matching.PlaceSet) -> list[int]:
        found: set[int] = set()
        n = places.n_points
        if n:
            points = shapely.points(places.lons[:n], places.lats[:n])
            _, box_idx = self.tree.query(points, predicate="intersects")
            found.update(self.owners[box_idx].tolist())
        for code in set(places.countries.tolist()):
            found.update(self.by_country.get(code, ()))
        return sorted(found)


_index: tuple[list[Live], frozenset, TargetIndex] | None = None


def index_for(lives: list[Live], areas: list[Area]) -> TargetIndex:
    """The index of the current live set, rebuilt only when that set changes."""
    global _index
    if _index is not None and _index[0] is lives:
        return _index[2]
    key = frozenset(live.key for live in lives)
    if _index is None or _index[1] != key:
        _index = (lives, key, TargetIndex(areas))
    else:
        _index = (lives, key, _index[2])
    return _index[2]
