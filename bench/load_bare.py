"""The bare endpoint bench/load.py measures beside the service: FastAPI, one route, one indexed
look-up (a citizen row by its primary key) in the same database, through the service's own
engine settings (service.db.make_engine: a pool, pre-ping), served by uvicorn with the same
number of worker processes. No middleware, no logging, no session, no rate limits.

    ANJEON_BENCH_BARE_URL=postgresql+psycopg://… uvicorn load_bare:app --app-dir bench --workers 2
"""

import os
import sys
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.db import make_engine

engine = make_engine(os.environ["ANJEON_BENCH_BARE_URL"])
app = FastAPI()
_LOOKUP = text("SELECT public_id FROM citizen WHERE id = :id")


@app.get("/lookup/{citizen_id}")
def lookup(citizen_id: int) -> dict[str, str | None]:
    with engine.connect() as connection:
        return {"id": connection.scalar(_LOOKUP, {"id": citizen_id})}
