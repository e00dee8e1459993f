"""The databases a benchmark runs on: a fresh SQLite file under `out`, and PostgreSQL when
ANJEON_BENCH_DATABASE_URL names one."""

import os
from pathlib import Path


def database_legs(out: Path, name: str) -> list[tuple[str, str]]:
    """(backend, URL) pairs; the SQLite file `out/name.db` is made anew."""
    out.mkdir(parents=True, exist_ok=True)
    database = out / f"{name}.db"
    database.unlink(missing_ok=True)
    legs = [("sqlite", f"sqlite:///{database}")]
    if os.environ.get("ANJEON_BENCH_DATABASE_URL"):
        legs.append(("postgresql", os.environ["ANJEON_BENCH_DATABASE_URL"]))
    return legs
