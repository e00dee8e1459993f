"""A rotation of the data secret: `anjeon reseal` over N citizens (ANJEON_BENCH_RESEAL_N,
default 200,000), each with a name, a phone and an e-mail sealed under the secret before, as
the command runs it (batches of 1,000 rows, each its own transaction, rows locked).

Figures, on SQLite (var/bench/reseal.db) and, with ANJEON_BENCH_DATABASE_URL, PostgreSQL:
- `reseal`: seconds and values a second for the three citizen columns;
- `baseline`: the same run's same batches (select and lock 1,000 rows, write each value
  back) with no opening or sealing: what the command cannot go below on this database.

    python bench/reseal.py
"""

import json
import os
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import bindparam, insert, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backends import database_legs
from service.citizens import reseal
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.migrate import drop_schema, upgrade
from service.privacy import PersonalDataVault

OUT = Path("var/bench")
STRETCH = 20_000
BATCH = 1_000
BEFORE, AFTER = (
    b"the secret before the rotation, 40 chars",
    b"the secret after the rotation, 40 chars!",
)
COLUMNS = [sealed for sealed in reseal.SEALED_COLUMNS if sealed.table is Citizen.__table__]


def seed(url: str, n: int) -> None:
    vault = PersonalDataVault(BEFORE)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        conn = session.connection()
        for start in range(0, n, STRETCH):
            conn.execute(
                insert(Citizen),
                [
                    {
                        "public_id": str(uuid.uuid4()),
                        "language": "ko",
                        "name_sealed": vault.seal("name", f"김지수 {i}"),
                        "phone_sealed": vault.seal("phone", f"+8210{i:08d}"),
                        "email_sealed": vault.seal("email", f"jisu{i}@example.com"),
                        "consent_at": utcnow(),
                    }
                    for i in range(start, min(n, start + STRETCH))
                ],
            )
    engine.dispose()


def _bare_pass(factory, sealed: reseal.SealedColumn) -> int:
    """The command's batches with no cryptography: each value written back as it is."""
    table, column = sealed.table, sealed.table.c[sealed.column]
    after, written = 0, 0
    while True:
        with factory.begin() as session:
            rows = session.execute(
                select(table.c.id, column)
                .where(table.c.id > after, column.is_not(None))
                .order_by(table.c.id)
                .limit(BATCH)
                .with_for_update(key_share=True)
            ).all()
            if not rows:
                return written
            session.execute(
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values({column: bindparam("value")}),
                [{"row_id": row_id, "value": value} for row_id, value in rows],
                execution_options={"synchronize_session": False},
            )
        after, written = rows[-1][0], written + len(rows)


def leg(url: str, backend: str, n: int) -> dict:
    if backend == "postgresql":
        drop_schema(url)
    upgrade(url)
    seed(url, n)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    bare = sum(_bare_pass(factory, sealed) for sealed in COLUMNS)
    baseline_s = time.perf_counter() - started
    vault = PersonalDataVault(BEFORE, [AFTER, BEFORE])
    started = time.perf_counter()
    done = 0
    for sealed in COLUMNS:
        after = 0
        while True:
            with factory.begin() as session:
                batch = reseal.reseal_batch(
                    session, vault=vault, sealed=sealed, after_id=after, size=BATCH
                )
            if batch.last_id is None:
                break
            after, done = batch.last_id, done + batch.resealed
    reseal_s = time.perf_counter() - started
    with factory() as session:
        left = reseal.left_to_reseal(session, vault=vault)
    assert done == bare == 3 * n and sum(left.values()) == 0, (done, bare, left)
    engine.dispose()
    return {
        "backend": backend,
        "citizens": n,
        "values": done,
        "reseal_s": round(reseal_s, 2),
        "reseal_values_per_s": round(done / reseal_s),
        "baseline_s": round(baseline_s, 2),
        "baseline_values_per_s": round(bare / baseline_s),
    }


def main() -> None:
    n = int(os.environ.get("ANJEON_BENCH_RESEAL_N", "200000"))
    results = [leg(url, backend, n) for backend, url in database_legs(OUT, "reseal")]
    print(f"anjeon reseal over {n:,} citizens (name, phone, e-mail: {3 * n:,} values)")
    print(f"{'backend':<12}{'reseal s':>10}{'values/s':>10}{'baseline s':>12}{'values/s':>10}")
    for r in results:
        print(
            f"{r['backend']:<12}{r['reseal_s']:>10.2f}{r['reseal_values_per_s']:>10,}"
            f"{r['baseline_s']:>12.2f}{r['baseline_values_per_s']:>10,}"
        )
    (OUT / "reseal.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
