"""Geomatching benchmark (`make bench`): synthetic citizens and advisories, the real sweep and
immediate-matching paths on SQLite and PostgreSQL, and in the same run the raw in-memory limit
(lon-sorted numpy slices + prepared shapely intersects_xy, nothing else) that each figure is
compared with. Figures go to stdout and to var/bench/geomatch.json.

    python bench/geomatch.py [--n 1000000] [--backend sqlite|postgresql]

Environment: ANJEON_BENCH_N (default 1,000,000), ANJEON_BENCH_DATABASE_URL (the PostgreSQL leg;
skipped, and said so, when unset). Each (backend, n) runs in its own process so peak RSS is its own.
"""

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.advisories.drafts import AdvisoryDraft
from service.advisories.models import Advisory
from service.advisories.service import create_advisory
from service.citizens.schemas import CitizenCreate
from service.citizens.service import Registry, register_citizen
from service.db import make_engine, make_session_factory
from service.geo import countries, matching
from service.geo.areas import Area, Circle, check_geometry
from service.geo.geocoding import NoGeocoder
from service.geomatch.places import load_reachable
from service.geomatch.service import Sweeper, match_citizen
from service.geomatch.targets import areas_of, live_advisories
from service.migrate import drop_schema, upgrade
from service.privacy import PersonalDataVault
from service.startup import load_for_life

NOW = datetime.now(UTC)
RNG = np.random.default_rng(20261127)
NEW_ADVISORY_RUNS = 5
CITIES = json.loads((ROOT / "bench" / "cities.json").read_text())["cities"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- synthetic data


def synthetic_places(n: int) -> tuple[np.ndarray, np.ndarray, list]:
    """80 % within 50 km of the 200 cities, 20 % uniform over land; countries looked up."""
    clustered = int(n * 0.8)
    city = RNG.integers(0, len(CITIES), clustered)
    c_lat = np.array([CITIES[i]["lat"] for i in city])
    c_lon = np.array([CITIES[i]["lon"] for i in city])
    distance = 50 * np.sqrt(RNG.random(clustered))  # uniform over the disc
    bearing = RNG.random(clustered) * 2 * np.pi
    lat = c_lat + distance * np.cos(bearing) / 110.6
    lon = c_lon + distance * np.sin(bearing) / (111.3 * np.cos(np.radians(c_lat)))
    land_lon, land_lat = [], []
    boundaries = countries.boundaries()
    while len(land_lon) < n - clustered:
        k = (n - clustered) * 3
        z = RNG.uniform(-0.85, 0.95, k)  # skip Antarctica
        cand_lat = np.degrees(np.arcsin(z))
        cand_lon = RNG.uniform(-180, 180, k)
        codes = boundaries.codes_at(cand_lon, cand_lat)
        keep = [i for i, code in enumerate(codes) if code]
        land_lon.extend(cand_lon[keep].tolist())
        land_lat.extend(cand_lat[keep].tolist())
    lon = np.concatenate([lon, np.array(land_lon[: n - clustered])])
    lat = np.concatenate([lat, np.array(land_lat[: n - clustered])])
    lon = (lon + 180) % 360 - 180
    return lon, lat, boundaries.codes_at(lon, lat)


def star(lon: float, lat: float, radius_km: float, vertices: int) -> dict:
    angles = np.sort(RNG.uniform(0, 2 * np.pi, vertices))
    radii = radius_km * RNG.uniform(0.6, 1.0, vertices)
    ring = [
        [
            lon + r * math.sin(a) / (111.3 * math.cos(math.radians(lat))),
            lat + r * math.cos(a) / 110.6,
        ]
        for r, a in zip(radii, angles, strict=True)
    ]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def synthetic_areas() -> list[Area]:
    areas = []
    for i in range(500):
        c = CITIES[i % len(CITIES)]
        geometry = check_geometry(
            star(c["lon"], c["lat"], float(RNG.uniform(20, 150)), 200),
            field="g",
            max_vertices=50_000,
        )
        areas.append(Area(geometry=geometry))
    areas.append(Area(geometry=big_polygon()))
    for i in range(200):
        c = CITIES[(i * 7) % len(CITIES)]
        areas.append(Area(circles=(Circle(lat=c["lat"], lon=c["lon"], radius_km=100.0),)))
    by_people = sorted({c["country"] for c in CITIES})[:20]
    areas.extend(Area(countries=(code,)) for code in by_people)
    return areas


def big_polygon() -> shapely.MultiPolygon:
    """A country-sized polygon of 5,000 vertices (over northern China and Mongolia)."""
    return check_geometry(star(105.0, 42.0, 900.0, 5000), field="g", max_vertices=50_000)


# ---------------------------------------------------------------- loading the database


def big_draft(big: Area) -> AdvisoryDraft:
    """A level-3 advisory over the 5,000-vertex polygon, effective now for three days."""
    return AdvisoryDraft(
        level="3",
        category="security",
        title={"en": "new"},
        message={"en": "m"},
        area=big,
        effective=NOW - timedelta(minutes=1),
        expires=NOW + timedelta(days=3),
    )


def load_database(url: str, lon, lat, codes) -> None:
    engine = make_engine(url)
    n = len(lon)
    channel = RNG.random(n)
    sms = channel < 0.8
    email = channel >= 0.6
    has_stay = RNG.random(n) < 0.3
    stay_city = RNG.integers(0, len(CITIES), n)
    today = NOW.date()
    # They registered yesterday: the sweeper's change scan must not see them all as new.
    stamp = (NOW - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    citizens = [
        (
            i + 1,
            str(uuid.UUID(int=i + 1)),
            "active",
            "ko",
            bool(sms[i]),
            bool(email[i]),
            stamp,
            stamp,
        )
        for i in range(n)
    ]
    places = []
    for i in range(n):
        places.append(
            (i + 1, "current", "point", float(lon[i]), float(lat[i]), codes[i], None, None)
        )
        if has_stay[i]:
            c = CITIES[stay_city[i]]
            start = today + timedelta(days=int(RNG.integers(0, 20)))
            places.append(
                (
                    i + 1,
                    "stay",
                    "point",
                    c["lon"] + float(RNG.normal(0, 0.2)),
                    c["lat"] + float(RNG.normal(0, 0.2)),
                    c["country"],
                    start,
                    start + timedelta(days=7),
                )
            )
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(
                "COPY citizen (id, public_id, status, language, notify_sms, notify_email,"
                " created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in citizens:
                    copy.write_row(row)
            with cursor.copy(
                "COPY citizen_place (citizen_id, kind, source, lon, lat, country,"
                " starts_on, ends_on) FROM STDIN"
            ) as copy:
                for row in places:
                    copy.write_row(row)
            cursor.execute("SELECT setval('citizen_id_seq', %s)", (n,))
        else:
            cursor.executemany(
                "INSERT INTO citizen (id, public_id, status, language, notify_sms, notify_email,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                citizens,
            )
            cursor.executemany(
                "INSERT INTO citizen_place (citizen_id, kind, source, lon, lat, country, starts_on,"
                " ends_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (*p[:6], p[6].isoformat() if p[6] else None, p[7].isoformat() if p[7] else None)
                    for p in places
                ],
            )
    if engine.dialect.name == "postgresql":
        # What autovacuum does to a table after a bulk insert (it is off on the benchmark's
        # server): statistics, and the visibility map that lets a new advisory read the places
        # and citizens from their indexes alone (index-only scans).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM (ANALYZE) citizen"))
            connection.execute(text("VACUUM (ANALYZE) citizen_place"))
    engine.dispose()


def store_advisories(
    session: Session, areas: list[Area], *, effective: datetime = NOW - timedelta(hours=1)
) -> None:
    for i, area in enumerate(areas):
        session.add(
            Advisory(
                public_id=str(uuid.uuid4()),
                revision=1,
                status="active",
                source="manual",
                issued_by="bench",
                alerts_citizens=True,
                level="2",
                category="security",
                title_en=f"bench {i}",
                message_en="bench",
                area=area.to_json(),
                effective=effective,
                expires=NOW + timedelta(days=30),
            )
        )
    session.flush()


# ---------------------------------------------------------------- the raw limit


def raw_limit(places: matching.PlaceSet, areas: list[Area]) -> tuple[float, int]:
    """The same spatial pairs by the bare method on the same places: lon-sorted arrays,
    searchsorted slice, lat mask, prepared intersects_xy (haversine for circles, isin for
    countries, sort-based unique ids); no time windows, no ledger, nothing else."""
    slon, slat = places.lons[: places.n_points], places.lats[: places.n_points]
    parts = [[part for part in matching.polygon_parts(area)] for area in areas]
    for area_parts in parts:  # prepared outside the timing, as the engine's are cached
        for part in area_parts:
            shapely.prepare(part)
    started = time.perf_counter()
    pairs = 0
    for area, area_parts in zip(areas, parts, strict=True):
        hits = []
        for part in area_parts:
            x0, y0, x1, y1 = part.bounds
            lo, hi = np.searchsorted(slon, x0), np.searchsorted(slon, x1, side="right")
            la = slat[lo:hi]
            idx = lo + np.flatnonzero((la >= y0) & (la <= y1))
            hits.append(idx[shapely.intersects_xy(part, slon[idx], slat[idx])])
        for c in area.circles:
            reach = c.radius_km / 110.5
            dlon = reach / math.cos(math.radians(min(89, abs(c.lat) + reach)))
            lo = np.searchsorted(slon, c.lon - dlon)
            hi = np.searchsorted(slon, c.lon + dlon, side="right")
            idx = lo + np.flatnonzero(np.abs(slat[lo:hi] - c.lat) <= reach)
            d = matching.haversine_km(c.lat, c.lon, slat[idx], slon[idx])
            hits.append(idx[d <= c.radius_km])
        if area.countries:
            wanted = [places.country_table[c] for c in area.countries if c in places.country_table]
            hits.append(np.flatnonzero(np.isin(places.country_ids, wanted)))
        if hits:
            pairs += len(matching.sorted_unique(places.citizen_ids[np.concatenate(hits)]))
    return time.perf_counter() - started, pairs


# ---------------------------------------------------------------- one (backend, n) run


def run_one(backend: str, n: int, url: str) -> list[dict]:
    rows: list[dict] = []

    def row(
        name: str,
        seconds: float,
        *,
        rows_written: int | None = None,
        raw: float | None = None,
        **extra: object,
    ) -> None:
        rows.append(
            {
                "name": name,
                "backend": backend,
                "n": n,
                "seconds": round(seconds, 4),
                "rows_per_s": round(rows_written / seconds) if rows_written and seconds else None,
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "ratio_to_raw": round(seconds / raw, 2) if raw else None,
                **extra,
            }
        )

    # The data is made in another process, so this one's peak RSS is the service's own.
    print(f"[{backend} n={n:,}] generating and loading…", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, __file__, "--setup", "--backend", backend, "--n", str(n), "--url", url],
        check=True,
    )
    # The raw limit holds every place at once: another process, so as not to count it here.
    raw = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--raw", "--n", str(n), "--url", url],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    raw_s, raw_big = raw["raw_s"], raw["raw_big_s"]
    row("raw_limit", raw_s, raw=raw_s, pairs=raw["pairs"])
    factory = make_session_factory(make_engine(url))
    # As the service's processes do before they serve (service/startup.py): the country
    # boundaries loaded (about 2 s, counted in no figure) and start-up's objects frozen.
    load_for_life()
    print(f"[{backend} n={n:,}] measuring…", file=sys.stderr, flush=True)

    def sweep(name: str, sweeper: Sweeper, now: datetime, **extra: object) -> None:
        started = time.perf_counter()
        result = sweeper.run(factory, now=now)
        seconds = time.perf_counter() - started
        row(
            name,
            seconds,
            rows_written=result.enqueued,
            raw=raw_s,
            pairs=result.matched,
            enqueued=result.enqueued,
            load_s=round(result.load_s, 3),
            match_s=round(result.match_s, 3),
            write_s=round(result.write_s, 3),
            write_rows_per_s=round(result.enqueued / result.write_s) if result.write_s else None,
            **extra,
        )

    sweeper = Sweeper()
    sweep("sweep_first", sweeper, NOW, note="every advisory against everyone, in shards")
    if backend == "postgresql":  # autovacuum would, after millions of new rows (it may be off)
        with factory.begin() as session:
            session.execute(text("ANALYZE alert"))
    sweep("sweep_steady", sweeper, NOW, note="nothing changed since the last sweep")
    with factory.begin() as session:  # a thousand citizens edit something
        session.execute(
            text("UPDATE citizen SET updated_at = :now WHERE id % :step = 0"),
            {"now": NOW, "step": max(n // 1000, 1)},
        )
    sweep("sweep_changed", sweeper, NOW, note="1,000 citizens changed since the last sweep")
    del sweeper  # a restarted process remembers nothing
    gc.collect()
    sweeper = Sweeper()
    sweep("sweep_steady_cold", sweeper, NOW, note="a restarted sweeper: checks everyone again")
    later = synthetic_areas()[0]  # an advisory that becomes effective between two sweeps
    with factory.begin() as session:
        store_advisories(session, [later], effective=NOW + timedelta(hours=1))
    sweeper.run(factory, now=NOW + timedelta(minutes=30))  # the new one, before it is effective
    sweep(
        "sweep_effective",
        sweeper,
        NOW + timedelta(hours=2),
        note="one advisory became effective: it alone, against everyone",
    )

    big = Area(geometry=big_polygon())

    def issue_big() -> tuple[float, float, int]:
        """The 5,000-vertex advisory, stored, matched, enqueued and committed: its seconds up
        to the commit, not counting it (as in all earlier figures), the commit's own seconds,
        and its alerts."""
        session = factory()
        try:
            started = time.perf_counter()
            created = create_advisory(session, draft=big_draft(big), issued_by="bench", now=NOW)
            session.flush()
            seconds = time.perf_counter() - started
            alerts = session.scalar(
                text("SELECT count(*) FROM alert WHERE advisory_id = :id"), {"id": created.id}
            )
            started = time.perf_counter()
            session.commit()
            return seconds, time.perf_counter() - started, alerts
        finally:
            session.close()

    # Each one committed, as advisories issued one after another: a rolled-back insert leaves
    # its index entries behind, dead, for the next one to step over (the runs before 2026-12-04
    # rolled back all but the last).
    times, commits, new_rows = [], [], 0
    for _ in range(NEW_ADVISORY_RUNS):
        seconds, commit_s, new_rows = issue_big()
        times.append(seconds)
        commits.append(commit_s)
    row(
        "new_advisory",
        statistics.median(times),
        raw=raw_big,
        enqueued=new_rows,
        runs_s=[round(t, 3) for t in times],
        commits_s=[round(t, 3) for t in commits],
        note=f"5,000-vertex polygon: store, match, enqueue; median of {NEW_ADVISORY_RUNS}",
    )
    if backend == "postgresql":
        after_checkpoint(factory, issue_big, row, raw_big)
    registry = Registry(
        vault=PersonalDataVault(b"b" * 40),
        geocoder=NoGeocoder(),
        phone_region="KR",
        max_stays=10,
    )
    data = CitizenCreate.model_validate(
        {
            "name": "Bench",
            "phone": "010-9999-0001",
            "language": "ko",
            "channels": ["sms"],
            "consent": True,
            "location": {"lat": CITIES[0]["lat"], "lon": CITIES[0]["lon"]},
        }
    )
    with factory.begin() as session:
        session.execute(text("SELECT 1"))
        started = time.perf_counter()
        person = register_citizen(session, registry=registry, data=data, verified=True).citizen
        citizen_s = time.perf_counter() - started
        started = time.perf_counter()
        match_citizen(session, citizen_id=person.id, now=NOW)  # again: the matching alone
        match_only_s = time.perf_counter() - started
    row(
        "new_citizen",
        citizen_s,
        match_only_s=round(match_only_s, 4),
        note="validate, seal, store, match against all active advisories",
    )
    return rows


def after_checkpoint(
    factory: sessionmaker,
    issue_big: Callable[[], tuple[float, float, int]],
    row: Callable[..., None],
    raw_big: float,
) -> None:
    """The same advisory right after a CHECKPOINT. Advisories in service come minutes apart,
    so a large one usually follows a checkpoint, and PostgreSQL then writes each index page it
    changes whole into the WAL (full-page images): the realistic case. At 1M it was dearer
    than the median of advisories issued back to back; at 10M, with small shared buffers, not.
    Needs a superuser or the pg_checkpoint role."""
    try:
        with factory.begin() as session:
            session.execute(text("CHECKPOINT"))
    except ProgrammingError as error:  # insufficient privilege; other errors are not expected
        print(f"no CHECKPOINT allowed, row skipped: {error.orig}", file=sys.stderr)
        return
    with factory.begin() as session:
        before = session.scalar(text("SELECT pg_current_wal_insert_lsn()"))
    seconds, commit_s, alerts = issue_big()
    with factory.begin() as session:
        wal = session.scalar(
            text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :before)"),
            {"before": before},
        )
    row(
        "new_advisory_ckpt",
        seconds,
        raw=raw_big,
        enqueued=alerts,
        commit_s=round(commit_s, 3),
        wal_mb=round(float(wal) / 1e6, 1),
        note="the same advisory, the first after a CHECKPOINT",
    )


def raw_figures(url: str) -> dict:
    """The raw limit for every advisory and for the 5,000-vertex polygon alone."""
    factory = make_session_factory(make_engine(url))
    with factory.begin() as session:
        lives = live_advisories(session, now=NOW)
        areas = areas_of(session, lives)
        places = load_reachable(session.connection(), today=matching.Today.at(NOW)).places
    raw_s, pairs = raw_limit(places, areas)
    raw_big_s = raw_limit(places, [Area(geometry=big_polygon())])[0]
    return {"raw_s": raw_s, "pairs": pairs, "raw_big_s": raw_big_s}


def setup(backend: str, n: int, url: str) -> None:
    lon, lat, codes = synthetic_places(n)
    areas = synthetic_areas()
    if backend == "postgresql":
        drop_schema(url)
    upgrade(url)
    load_database(url, lon, lat, codes)
    factory = make_session_factory(make_engine(url))
    with factory.begin() as session:
        store_advisories(session, areas)


# ---------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=int(os.environ.get("ANJEON_BENCH_N", 1_000_000)))
    parser.add_argument("--backend", choices=["sqlite", "postgresql"])
    parser.add_argument("--one", action="store_true", help="(internal) run one leg, print JSON")
    parser.add_argument("--setup", action="store_true", help="(internal) make and load the data")
    parser.add_argument("--raw", action="store_true", help="(internal) the raw limit, as JSON")
    parser.add_argument("--url", help="(internal) the database of --setup and --raw")
    args = parser.parse_args()
    pg_url = os.environ.get("ANJEON_BENCH_DATABASE_URL")
    if args.setup:
        setup(args.backend, args.n, args.url)
        return 0
    if args.raw:
        print(json.dumps(raw_figures(args.url)))
        return 0
    if args.one:
        if args.backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                rows = run_one("sqlite", args.n, f"sqlite:///{tmp}/bench.db")
        else:
            rows = run_one("postgresql", args.n, pg_url)
        print(json.dumps(rows))
        return 0
    legs = [("sqlite", size) for size in sorted({max(args.n // 10, 1000), args.n})]
    if pg_url:
        legs += [("postgresql", size) for size in sorted({max(args.n // 10, 1000), args.n})]
    else:
        print(
            "ANJEON_BENCH_DATABASE_URL is not set: the PostgreSQL leg is skipped", file=sys.stderr
        )
    if args.backend:
        legs = [leg for leg in legs if leg[0] == args.backend]
    results: list[dict] = []
    for backend, size in legs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", "--backend", backend, "--n", str(size)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        results.extend(json.loads(out.strip().splitlines()[-1]))
    print_table(results)
    target = ROOT / "var" / "bench" / "geomatch.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {target.relative_to(ROOT)}")
    return 0


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'name':<18} {'backend':<11} {'n':>9} {'seconds':>9} {'rows/s':>9} {'RSS MB':>8} "
        f"{'x raw':>7}  detail"
    )
    for r in results:
        detail = {
            k: v
            for k, v in r.items()
            if k
            not in ("name", "backend", "n", "seconds", "rows_per_s", "peak_rss_mb", "ratio_to_raw")
        }
        print(
            f"{r['name']:<18} {r['backend']:<11} {r['n']:>9,} {r['seconds']:>9.3f} "
            f"{r['rows_per_s'] or '':>9} {r['peak_rss_mb']:>8} {r['ratio_to_raw'] or '':>7}  "
            f"{detail if detail else ''}"
        )
    sizes = sorted({r["n"] for r in results})
    if len(sizes) == 2:
        small, large = sizes
        print(f"\ngrowth from {small:,} to {large:,} ({large / small:.0f}x citizens):")
        for backend in sorted({r["backend"] for r in results}):
            for name in (
                "sweep_first",
                "sweep_steady",
                "sweep_changed",
                "sweep_steady_cold",
                "sweep_effective",
                "new_advisory",
                "new_advisory_ckpt",
                "new_citizen",
            ):
                a = next(
                    (
                        r
                        for r in results
                        if r["backend"] == backend and r["n"] == small and r["name"] == name
                    ),
                    None,
                )
                b = next(
                    (
                        r
                        for r in results
                        if r["backend"] == backend and r["n"] == large and r["name"] == name
                    ),
                    None,
                )
                if a and b and a["seconds"]:
                    print(f"  {backend:<11} {name:<18} {b['seconds'] / a['seconds']:6.1f}x time")


if __name__ == "__main__":
    sys.exit(main())
