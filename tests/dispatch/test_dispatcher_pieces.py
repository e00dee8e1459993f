"""Pieces of the dispatcher, found by a review of its concurrency: the words of a batch's
revisions, a circuit's probe that another process took over, a provider's long reference."""

from datetime import timedelta

from service.db import utcnow
from service.dispatch.circuit import CLOSED, OPEN, Circuit, CircuitPolicy
from service.dispatch.models import NotifierCircuit
from service.dispatch.notifiers.base import Retry, Sent
from service.dispatch.recipients import ContentCache
from service.ledger.models import PROVIDER_REF_LENGTH, stored_provider_ref
from tests.dispatch.seed import seeded_advisory


def test_a_batch_naming_more_revisions_than_the_cache_holds_gets_the_words_of_each(db):
    """The cache evicted down to its size before it returned what it had loaded: of 300
    revisions asked for, 256 came back, and the other alerts failed as "advisory not
    found" (e-mail batches hold up to 500 rows)."""
    now = utcnow()
    advisories = [seeded_advisory(now) for _ in range(300)]
    db.add_all(advisories)
    db.flush()
    keys = {(advisory.id, 1) for advisory in advisories}
    cache = ContentCache()
    got = cache.load(db, keys)
    assert got.keys() == keys
    assert {content.advisory_public_id for content in got.values()} == {
        advisory.public_id for advisory in advisories
    }
    again = cache.load(db, set(list(keys)[:10]))  # the cache itself kept its size
    assert len(again) == 10


def test_a_probe_another_process_took_over_and_closed_leaves_no_trace_here(db):
    """Process A took the half-open probe and found nothing to send; a minute on, B took it
    over and its send closed the circuit. A still thought itself probing, and one failed send
    of its own opened the circuit for everyone, not `failures` in a row."""
    policy = CircuitPolicy(failures=10, open_s=30, max_open_s=300)
    a, b = (
        Circuit(notifier="twilio", channel="sms", policy=policy, worker=worker)
        for worker in ("A", "B")
    )
    start = utcnow()
    a.ensure_row(db, now=start)
    row = db.get(NotifierCircuit, "twilio")
    row.state, row.opened, row.open_until, row.changed_at = OPEN, 1, start, start
    db.flush()
    assert a.gate(db, now=start + timedelta(seconds=1)).probe
    taken_over = start + timedelta(seconds=62)
    assert b.gate(db, now=taken_over).probe
    b.observe(Sent(provider_ref="SM1"))
    assert b.settle(db, now=taken_over) == CLOSED
    later = taken_over + timedelta(seconds=1)
    gate = a.gate(db, now=later)
    assert gate.send and not gate.probe
    a.observe(Retry(reason="one read timeout"))
    assert a.settle(db, now=later) is None
    assert db.get(NotifierCircuit, "twilio").state == CLOSED
    for _ in range(policy.failures - 1):  # the failures in a row still open it
        a.observe(Retry(reason="read timeout"))
    assert a.settle(db, now=later) == OPEN


def test_a_reference_longer_than_the_ledger_holds_is_kept_so_a_report_still_finds_it():
    """A plugin's reference past the column's 255 characters is kept as its start and a
    digest of the whole: the same reference always gives the same value (a delivery report
    compares by it), two that share their start do not."""
    short = "SM" + "0" * 32
    assert stored_provider_ref(short) == short and stored_provider_ref(None) is None
    first, second = ("x" * 300 + "1", "x" * 300 + "2")
    kept = stored_provider_ref(first)
    assert kept is not None and len(kept) == PROVIDER_REF_LENGTH
    assert kept == stored_provider_ref(first) != stored_provider_ref(second)
    assert kept.startswith("x" * 200)
