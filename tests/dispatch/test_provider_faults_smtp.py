"""Provider faults, SMTP (issue #16, item 3), on both backends: the real app enrols the
citizens and issues the advisory, the real dispatcher sends through the real SmtpNotifier to
a real SMTP server (aiosmtpd) that plays the fault. For each fault: nothing is lost, and an
e-mail whose outcome was unknown to us arrives at most once more, with the same Message-ID.

An outage "of a minute" is tests.dispatch.faults.WINDOW_S here, with timeouts and backoff
scaled down to match (see that module). Each test prints a `FAULT ...: lost=... duplicate=...`
line (pytest -rP shows it) for the issue's closing note."""

import pytest

from service.db import make_engine, make_session_factory
from service.dispatch.dispatcher import Dispatcher
from service.privacy import PersonalDataVault
from tests.conftest import TEST_SECRET
from tests.dispatch.faults import (
    STALL_S,
    WINDOW_S,
    email_counts,
    enrol_email,
    fault_settings,
    issue,
    rows_of,
    run_until_settled,
    statuses,
)
from tests.dispatch.faults import (
    faulty as faulty,
)
from tests.dispatch.seed import email_of, scratch_database, seed_pending

CITIZENS = 12


@pytest.mark.parametrize(
    ("kind", "answer", "fault_name"),
    [("421", "421", "smtp 421 at connect"), ("stall", "stalled", "smtp accept then stall")],
    ids=["421-at-connect", "accept-then-stall"],
)
def test_a_window_of_refused_or_silent_connections(
    api, consul, db, faulty, smtp, kind, answer, fault_name
):
    """For WINDOW_S the relay greets every new connection with 421 (shedding load), or
    accepts it and says nothing for longer than the client's timeout. Each try fails before
    anything is sent, is retried, and goes once the relay is back: one connection per try
    (no second one at once), nothing twice, nothing lost."""
    addresses = enrol_email(api, CITIZENS, block=1)
    fault = smtp.fault(kind, for_s=WINDOW_S, stall_s=STALL_S, on_first_request=True)
    issue(api, consul)
    run_until_settled(faulty, db)
    got = email_counts(smtp, addresses)
    bad = [e for e in smtp.during(fault, "connect") if e.answer == answer]
    print(got.line(fault_name, connections_during=len(bad)))
    # On failure: what the relay saw of each message, and the ledger's last word on each.
    seen = [(e.at, e.to, e.answer) for e in smtp.events if e.stage == "data"]
    ledger = [(r.attempts, r.last_error) for r in rows_of(db, "email")]
    assert (got.lost, got.duplicate) == (0, 0), (seen, ledger)
    assert bad, "the fault was never met"
    assert statuses(db) == {"sent": CITIZENS}
    assert smtp.during(fault, "data") == []  # nothing reached the relay meanwhile
    tries = sum(r.attempts - r.retry_base - 1 for r in rows_of(db, "email"))
    assert len(bad) == tries


@pytest.mark.parametrize(
    ("kind", "at"), [("drop", "data"), ("stall", "data")], ids=["dropped", "reply-stalled"]
)
def test_outcome_unknown_after_data_is_resent_once_with_the_same_message_id(
    api, consul, db, faulty, smtp, kind, at, caplog
):
    """Each message's first try reaches the relay, which keeps it, and then the connection is
    cut (or the final reply never comes in time, RFC 1047's case): we cannot know it arrived.
    It is resent once, later, with the same Message-ID, so a mail client can show it once;
    the ledger notes the outcome was unknown."""
    addresses = enrol_email(api, CITIZENS, block=3 if kind == "drop" else 4)
    for address in addresses:
        smtp.fault(kind, at=at, count=1, to=address, stall_s=STALL_S)
    issue(api, consul)
    run_until_settled(faulty, db)
    got = email_counts(smtp, addresses)  # asserts one Message-ID per address
    print(got.line(f"smtp {'dropped after DATA' if kind == 'drop' else 'stalled after DATA'}"))
    assert got.lost == 0
    assert got.most <= 2  # at most one resend
    # The relay kept each first copy, which was resent once. Under a loaded CI a first try can
    # time out before its DATA (nothing kept): the try that then meets the fault is already the
    # resend, whose outcome is unknown too, and it counts as sent with one copy (seen once).
    twice = [
        r for r in caplog.records if r.getMessage() == "outcome unknown twice: counted as sent"
    ]
    assert CITIZENS - len(twice) <= got.duplicate <= CITIZENS
    rows = rows_of(db, "email")
    assert {r.status for r in rows} == {"sent"}
    # The resend was a later try of the dispatcher (with its backoff), not a second
    # transaction inside the first try; and the ledger says why it went twice. A loaded CI run
    # once gave some rows a third try ({2, 3}; not traced: a circuit's hold is refunded, so it
    # was a try that failed before DATA, a plain retry); the copies are bounded above.
    tries = [r.attempts - r.retry_base for r in rows]
    assert all(2 <= n <= 3 for n in tries), tries
    assert all("outcome unknown" in (r.last_error or "") for r in rows), [
        r.last_error for r in rows
    ]


def test_a_window_of_drops_after_data(api, consul, db, faulty, smtp):
    """For WINDOW_S every message is received, kept and its connection cut. Nothing is lost
    and every copy has the same Message-ID. At most one resend (issue #16): the SMTP notifier
    cannot look a message up, so after a first unknown outcome the dispatcher resends once, and
    a resend whose outcome is unknown too counts as sent (the relay may hold both copies)."""
    addresses = enrol_email(api, CITIZENS, block=5)
    # A drop cuts the connection at once: no short timeout is needed to see it, and one would
    # take a reply a loaded machine was slow to read for a lost one, and resend (a CI run saw
    # 6 copies more for 4 drops, which the last assertion below counts as a fault).
    faulty.notifiers["email"].timeout_s = 10.0
    fault = smtp.fault("drop", for_s=WINDOW_S, on_first_request=True)
    issue(api, consul)
    run_until_settled(faulty, db)
    got = email_counts(smtp, addresses)
    dropped = [e for e in smtp.during(fault, "data") if e.answer == "dropped"]
    print(got.line("smtp window of drops after DATA", dropped=len(dropped), most=got.most))
    assert got.lost == 0
    assert dropped
    assert statuses(db) == {"sent": CITIZENS}
    assert got.most <= 2  # one resend at most, however long the window
    assert got.duplicate <= len(dropped)  # a copy more only where a connection was cut


def test_an_sms_retry_does_not_wait_for_a_stalled_relay(database_url, tmp_path, twilio, smtp):
    """The SMS and e-mail lanes of one dispatcher (its own connections, as in production).
    The relay accepts the first six connections and says nothing (each e-mail try waits out
    the 3.5 s timeout); every SMS's first try gets a 429 with Retry-After: 1. The SMS are
    tried again a second later, while the e-mail lane is still waiting on the relay."""
    with scratch_database(database_url, tmp_path, "stalled_lane") as url:
        seed_pending(url, citizens=6, secret=TEST_SECRET.encode())
        # A 3.5 s timeout, not 2: the SMS lane may start a second late on a loaded machine
        # (a CI run saw its first 429 only 0.09 s before the first e-mail went).
        settings = fault_settings(url, twilio, smtp, smtp_timeout_s=3.5, circuit_failures=1_000_000)
        engine = make_engine(url)
        dispatcher = Dispatcher.from_settings(
            settings, make_session_factory(engine), vault=PersonalDataVault(TEST_SECRET.encode())
        )
        relay = smtp.fault("stall", count=6, stall_s=5.0)
        # 429s for half a second: what meets one holds the rest of its batch for Retry-After.
        throttled = twilio.fault("429", for_s=0.5, retry_after="1", on_first_request=True)
        try:
            dispatcher.run_until_idle(poll_s=0.05)
        finally:
            dispatcher.close()
            engine.dispose()
        got = email_counts(smtp, [email_of(n) for n in range(6)])
        assert (got.lost, got.duplicate) == (0, 0) and relay.hits == 6 and throttled.hits >= 1
        accepted = [r.at for r in twilio.requests if r.method == "create" and r.answer == "201"]
        assert len(accepted) == 6
        first_429 = min(r.at for r in twilio.requests if r.answer == "429")
        emailed = min(e.at for e in smtp.events if e.stage == "data")
        # The relay held the e-mail lane well past the SMS's Retry-After ...
        assert emailed > first_429 + 1.5
        # ... and the SMS went when their Retry-After was over, not when the e-mail lane
        # was done (then they go with the e-mails' second try, within a few milliseconds).
        assert max(accepted) < emailed - 0.1
