"""Provider faults, Twilio (issue #16, item 3), on both backends: the real app enrols the
citizens and issues the advisory, the real dispatcher sends through the official twilio SDK
to the fake Twilio, which plays the fault. For each fault: nothing is lost and no SMS is sent
twice (a send whose outcome is unknown is looked up at Twilio before any resend).

An outage "of a minute" is tests.dispatch.faults.WINDOW_S here, with timeouts and backoff
scaled down to match (see that module). Each test prints a `FAULT ...: lost=... duplicate=...`
line (pytest -rP shows it) for the issue's closing note."""

import itertools
from collections import Counter

import pytest

from tests.conftest import TEST_SECRET
from tests.dispatch.conftest import dispatcher_in
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.faults import (
    STALL_S,
    WINDOW_S,
    email_counts,
    enrol_sms,
    fault_settings,
    issue,
    rows_of,
    run_until_settled,
    sms_counts,
    statuses,
)
from tests.dispatch.faults import (
    faulty as faulty,
)
from tests.dispatch.seed import email_of, phone_of, scratch_database, seed_pending
from tests.dispatch.test_crash import dispatcher_env, ledger, start

CITIZENS = 12


def assert_never_resent_blindly(twilio: FakeTwilio, numbers: list[str]) -> None:
    """After a create whose outcome was unknown (5xx, stalled), the next create to the same
    number comes only after a list request that Twilio answered."""
    with twilio.lock:
        requests = sorted(twilio.requests, key=lambda r: r.at)
    for number in numbers:
        unknown = False
        for request in (r for r in requests if r.to == number):
            if request.method == "create":
                assert not unknown, f"{number}: resent without a look-up"
                unknown = request.answer not in ("201", "429", "400")
            elif request.answer == "200":
                unknown = False


@pytest.mark.parametrize(
    ("kind", "created"),
    [("5xx", "never"), ("5xx", "always"), ("timeout", "never"), ("timeout", "always")],
    ids=["5xx", "5xx-after-creating", "timeout", "timeout-after-creating"],
)
def test_a_window_of_5xx_or_timeouts(api, consul, db, faulty, twilio, kind, created):
    """For WINDOW_S every request (creating and listing messages) gets a 500, or no answer
    within the client's timeout; Twilio created the message first ("after-creating") or not.
    Each unknown outcome is looked up (the look-ups fail too while the fault lasts, and are
    tried again), so each SMS reaches Twilio exactly once."""
    numbers = enrol_sms(api, CITIZENS, block=1)
    # From the first request on, not from now: on a loaded machine, issuing the advisory can
    # outlast the window, and the fault would never be met.
    fault = twilio.fault(
        kind, for_s=WINDOW_S, created=created, stall_s=STALL_S, on_first_request=True
    )
    issue(api, consul)
    run_until_settled(faulty, db)
    got = sms_counts(twilio, numbers)
    creates, lists = twilio.during(fault, "create"), twilio.during(fault, "list")
    print(
        got.line(
            f"twilio {kind}{' after creating' if created == 'always' else ''}",
            requests_during=len(creates) + len(lists),
            creates_during=len(creates),
            lookups_during=len(lists),
        )
    )
    assert (got.lost, got.duplicate) == (0, 0)
    assert creates, "the fault was never met"
    assert statuses(db) == {"sent": CITIZENS}
    assert_never_resent_blindly(twilio, numbers)
    # Each row holds the sid of the one message Twilio has for its number.
    assert {r.provider_ref for r in rows_of(db, "sms")} == {m["sid"] for m in twilio.messages}
    if created == "always":
        # Twilio had each message from the first try: the look-up found it, nothing was
        # created again.
        assert len([r for r in twilio.requests if r.method == "create"]) == CITIZENS


@pytest.mark.parametrize("mps", [10, 0], ids=["paced", "unpaced"])
def test_a_429_storm_with_retry_after(api, consul, db, database_url, twilio, smtp, mps):
    """For WINDOW_S every create gets 429 (20429) with Retry-After: 1. The channel pauses
    for that second after each 429 instead of trying again at once; every SMS goes once the
    storm is over."""
    # A bound of 10 s, not the faults' 0.8 s (1.6 s an exchange): a 429 answers at once, and
    # on a CI machine running four legs on two cores an exchange once took longer than 1.6 s,
    # was cut, and its outcome looked up (CI of 690167b) where this test asserts none.
    settings = fault_settings(database_url, twilio, smtp, twilio_mps=mps, twilio_timeout_s=5.0)
    dispatcher = dispatcher_in(db, settings)
    numbers = enrol_sms(api, CITIZENS, block=2)
    storm = twilio.fault("429", for_s=WINDOW_S, retry_after="1", on_first_request=True)
    issue(api, consul)
    try:
        run_until_settled(dispatcher, db)
    finally:
        dispatcher.close()
    got = sms_counts(twilio, numbers)
    refused = [r for r in twilio.during(storm, "create") if r.answer == "429"]
    label = f"twilio 429 storm ({'paced' if mps else 'unpaced'})"
    assert (got.lost, got.duplicate) == (0, 0)
    assert refused
    assert statuses(db) == {"sent": CITIZENS}
    assert twilio.lists == []  # a 429 was refused, not sent: nothing to look up
    # The pause between batches holds: the storm's 429s come in bursts a second apart.
    bursts: list[list[float]] = [[refused[0].at]]
    for a, b in itertools.pairwise(refused):
        if b.at - a.at >= 0.9:
            bursts.append([])
        bursts[-1].append(b.at)
    assert len(bursts) <= WINDOW_S / 1 + 1
    # Within the second after a 429, only requests already on their way may follow: sent
    # within 50 ms of it, and no more than the sending threads (8) in a burst.
    early = [b for a, b in itertools.pairwise(refused) if 0.05 < b.at - a.at < 0.95]
    largest = max(len(burst) for burst in bursts)
    print(
        got.line(
            label,
            requests_during=len(refused),
            bursts=len(bursts),
            largest_burst=largest,
            within_retry_after=len(early),
        )
    )
    if early or largest > 8:
        pytest.xfail(
            f"{len(early)} requests 50 ms to 1 s after a 429, bursts of up to {largest} "
            f"({label}): Pacer.hold() cannot move the slots pool threads already took "
            "(paced), and does nothing for a notifier without a rate (unpaced): the whole "
            "batch in hand meets the 429"
        )


PROCESS_CITIZENS = 20


def test_a_bad_spell_at_both_providers_with_the_dispatcher_as_a_process(
    database_url, tmp_path, twilio, smtp
):
    """`anjeon dispatch --until-idle` as a real process, against a committed database of 20
    citizens owed an SMS and an e-mail each, while both providers have a bad spell, one
    fault after another (WINDOW_S each): Twilio 5xx, then timeouts (every other message
    created first), then 429s with Retry-After; the relay greets with 421, then says nothing,
    and cuts ten messages off after DATA. Nothing is lost, no SMS goes twice, and no e-mail
    more than twice (then with the same Message-ID). The circuit breaker is kept out of the
    way (it would skip the later spells: tests/dispatch/test_circuit*.py is about it)."""
    with scratch_database(database_url, tmp_path, "faults") as url:
        seed_pending(url, citizens=PROCESS_CITIZENS, secret=TEST_SECRET.encode())
        env = {
            **dispatcher_env(url, twilio, smtp),
            "ANJEON_TWILIO_TIMEOUT_S": "0.3",
            "ANJEON_TWILIO_SETTLE_S": "0",  # twice the timeout, as its spells assume
            "ANJEON_SMTP_TIMEOUT_S": "0.5",
            "ANJEON_DISPATCH_LEASE_S": "10",
            "ANJEON_DISPATCH_BACKOFF_BASE_S": "0.1",
            "ANJEON_DISPATCH_BACKOFF_CAP_S": "0.5",
            "ANJEON_DISPATCH_MAX_ATTEMPTS": "40",
            "ANJEON_CIRCUIT_FAILURES": "1000000",
        }
        # Each spell starts when the process first calls, and the next when it ends.
        bad = twilio.fault("5xx", for_s=WINDOW_S, created="alternate", on_first_request=True)
        slow = twilio.fault(
            "timeout", for_s=WINDOW_S, after=bad, created="alternate", stall_s=STALL_S
        )
        busy = twilio.fault("429", for_s=WINDOW_S, after=slow, retry_after="1")
        twilio_faults = [bad, slow, busy]
        shedding = smtp.fault("421", for_s=WINDOW_S, on_first_request=True)
        silent = smtp.fault("stall", for_s=WINDOW_S, after=shedding, stall_s=STALL_S)
        cut = [smtp.fault("drop", count=1, to=email_of(n)) for n in range(10)]
        smtp_faults = [shedding, silent]
        process = start(env)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "notifier raised" not in err  # every fault was classified, none raised
        sms = sms_counts(twilio, [phone_of(n) for n in range(PROCESS_CITIZENS)])
        mail = email_counts(smtp, [email_of(n) for n in range(PROCESS_CITIZENS)])
        print(
            sms.line(
                "process: twilio 5xx, timeouts, 429",
                requests_during=[len(twilio.during(f)) for f in twilio_faults],
            )
        )
        print(
            mail.line(
                "process: smtp 421, stall, 10 drops after DATA",
                connections_during=[len(smtp.during(f, "connect")) for f in smtp_faults],
            )
        )
        assert (sms.lost, sms.duplicate) == (0, 0)
        assert mail.lost == 0 and mail.most <= 2
        assert mail.duplicate == sum(f.hits for f in cut) == 10
        # The later spells are usually met too (the counts above say), but not always: while
        # the relay stalls, the SMS lane can sit idle (see test_an_sms_retry_waits_for...).
        assert bad.hits and shedding.hits, "the first spells were never met"
        assert ledger(url) == Counter({"sent": 2 * PROCESS_CITIZENS})
        assert out.startswith("claimed ")
