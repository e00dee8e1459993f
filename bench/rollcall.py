"""The roll call of one large advisory, as every open console asks for it every 3 s (or ten
times as long as the last answer took): N citizens in Bangkok (ANJEON_BENCH_ROLLCALL_N,
default 200,000), all asked by a level 4 advisory over Thailand and sent, a third answered
(one in seven of those needs help, one in five of those is taken by a consul).

Figures, on SQLite (var/bench/rollcall.db) and, with ANJEON_BENCH_DATABASE_URL, PostgreSQL:
- `first`: the first roll call of a process (it matches the advisory for the countries);
- `warm`: the median of five more, whole (counts, by country, the first page of 100);
- `help_not_taken`: the median of five filtered to those who need help and nobody handles;
- `baseline`: the same run's bare read of who was asked (the advisory's ledger rows, through
  the driver's own cursor, no counting): what a roll call cannot go below.

    python bench/rollcall.py
"""

import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backends import database_legs
from bench.dispatch import _advisory
from service.advisories.models import Advisory
from service.checkin import rollcall
from service.checkin.models import Checkin
from service.citizens.models import Citizen, CitizenPlace
from service.citizens.service import Registry
from service.db import make_engine, make_session_factory, utcnow
from service.ledger.enqueue import insert_alerts
from service.migrate import drop_schema, upgrade
from service.privacy import PersonalDataVault

OUT = Path("var/bench")
STRETCH = 20_000


def seed(url: str, n: int) -> int:
    """The citizens, their ledger rows and answers; returns the advisory's id."""
    now = utcnow()
    spread = np.random.default_rng(15)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        advisory = _advisory("4", now)
        session.add(advisory)
        session.flush()
        conn = session.connection()
        for start in range(0, n, STRETCH):
            people = [
                {"public_id": str(uuid.uuid4()), "language": "ko", "notify_sms": True}
                for _ in range(start, min(n, start + STRETCH))
            ]
            ids = conn.execute(insert(Citizen).returning(Citizen.id), people).scalars().all()
            places = [
                {
                    "citizen_id": cid,
                    "kind": "current",
                    "source": "point",
                    "lat": 13.65 + spread.random() * 0.2,
                    "lon": 100.4 + spread.random() * 0.2,
                    "country": "TH",
                }
                for cid in ids
            ]
            conn.execute(insert(CitizenPlace), places)
        ids = list(conn.execute(select(Citizen.id).order_by(Citizen.id)).scalars())
        sent_at = now - timedelta(minutes=5)
        insert_alerts(conn, rows=[(advisory.id, 1, cid, "sms") for cid in ids], now=sent_at)
        conn.execute(text("UPDATE alert SET status = 'sent'"))
        answers = [
            {
                "advisory_id": advisory.id,
                "citizen_id": cid,
                "answer": "help" if i % 7 == 0 else "safe",
                "channel": "sms",
                "answer_id": i + 1,
                "answered_at": now,
                "duty_notified_at": now,
                "taken_by": "consul-bench" if i % 35 == 0 else None,
                "taken_at": now if i % 35 == 0 else None,
            }
            for i, cid in enumerate(ids[::3])
        ]
        conn.execute(insert(Checkin), answers)
        advisory_id = advisory.id
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return advisory_id


def leg(url: str, backend: str, n: int) -> dict:
    if backend == "postgresql":
        drop_schema(url)
    upgrade(url)
    advisory_id = seed(url, n)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    registry = Registry(
        vault=PersonalDataVault(b"b" * 32), geocoder=None, phone_region="KR", max_stays=5
    )

    def once(**filters: object) -> tuple[float, rollcall.RollCall]:
        with factory() as session:
            advisory = session.get(Advisory, advisory_id)
            assert advisory is not None
            started = time.perf_counter()
            found = rollcall.roll_call(
                session,
                advisory=advisory,
                registry=registry,
                answer=filters.get("answer"),  # type: ignore[arg-type]
                country=None,
                taken=filters.get("taken"),  # type: ignore[arg-type]
                limit=100,
                offset=0,
                now=utcnow(),
            )
            return time.perf_counter() - started, found

    first, whole = once()
    assert sum(whole.counts.values()) == n and whole.by_country["TH"] == whole.counts
    warm = statistics.median(once()[0] for _ in range(5))
    helped = [once(answer="help", taken=False) for _ in range(5)]
    assert helped[0][1].total == whole.counts["help"] - len(range(0, (n + 2) // 3, 35))
    baseline = []
    for _ in range(5):
        with engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            started = time.perf_counter()
            cursor.execute(
                f"SELECT citizen_id, status FROM alert WHERE advisory_id = {advisory_id}"
            )
            rows = cursor.fetchall()
            baseline.append(time.perf_counter() - started)
            assert len(rows) == n
    engine.dispose()
    return {
        "backend": backend,
        "citizens": n,
        "first_s": round(first, 3),
        "warm_s": round(warm, 3),
        "help_not_taken_s": round(statistics.median(t for t, _ in helped), 3),
        "baseline_s": round(statistics.median(baseline), 3),
    }


def main() -> None:
    n = int(os.environ.get("ANJEON_BENCH_ROLLCALL_N", "200000"))
    results = [leg(url, backend, n) for backend, url in database_legs(OUT, "rollcall")]
    print(f"roll call of one advisory that asked {n:,} citizens (seconds)")
    print(f"{'backend':<12}{'first':>8}{'warm':>8}{'help, not taken':>17}{'baseline':>10}")
    for r in results:
        print(
            f"{r['backend']:<12}{r['first_s']:>8.3f}{r['warm_s']:>8.3f}"
            f"{r['help_not_taken_s']:>17.3f}{r['baseline_s']:>10.3f}"
        )
    (OUT / "rollcall.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
