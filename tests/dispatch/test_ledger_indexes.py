"""The ledger's indexes leave a claim alone (issue #15): `is_open` follows status through every
move, no index names status, and on PostgreSQL a claim is a HOT update."""

from sqlalchemy import inspect, select, text

from service.db import utcnow
from service.ledger import outbox, states
from service.ledger.enqueue import insert_alerts
from service.ledger.models import Alert
from service.ledger.outbox import Decision


def _claim(db, limit: int) -> list[outbox.Claimed]:
    return outbox.claim(db, channel="sms", now=utcnow(), limit=limit, lease_s=120, worker="w")


def test_is_open_follows_status(db):
    insert_alerts(db.connection(), rows=[(1, 1, c, "sms", 2) for c in (1, 2, 3)], now=utcnow())
    claimed = _claim(db, 2)
    outbox.record(
        db,
        decided=[(claimed[0], Decision(claimed[0].id, states.SENT, provider_ref="P1"))],
        worker="w",
        now=utcnow(),
    )
    db.expire_all()
    seen = {row.status: row.is_open for row in db.scalars(select(Alert))}
    assert seen == {states.SENT: False, states.CLAIMED: True, states.PENDING: True}
    assert outbox.open_count(db) == 2


def test_no_index_names_status(db):
    # A claim changes status (pending -> claimed): an index over it would make every claim
    # write index entries, and on PostgreSQL forbid a HOT update.
    indexes = inspect(db.connection()).get_indexes("alert")
    assert {"ix_alert_citizen_id", "ix_alert_open_priority"} <= {i["name"] for i in indexes}
    assert all("status" not in i["column_names"] for i in indexes)


def test_the_claim_index_covers_is_open_and_a_claim_is_hot_on_postgresql(db, backend):
    insert_alerts(db.connection(), rows=[(1, 1, c, "sms", 2) for c in range(1, 11)], now=utcnow())
    if backend == "sqlite":
        # SQLite has no HOT updates; its claim reads the index only if the WHERE is the same.
        sql = db.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'ix_alert_open_priority'")
        ).scalar_one()
        assert sql.endswith(f"WHERE {states.sql_in(states.OPEN)}")
        assert len(_claim(db, 10)) == 10
        return
    counts = text(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'alert'"
    )
    before = db.execute(counts).one()
    assert len(_claim(db, 10)) == 10
    updated, hot = (a - b for a, b in zip(db.execute(counts).one(), before, strict=True))
    assert (updated, hot) == (10, 10)
