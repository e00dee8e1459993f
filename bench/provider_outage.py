"""A real minute of provider fault, at the service's own timings (10 s client timeouts,
backoff from 5 s, 8 tries, a circuit opening after 10 failures for 30 s), with the dispatcher
as a process (`anjeon dispatch --until-idle`) against a scratch database of citizens owed an
SMS and an e-mail each. The tests (tests/dispatch/test_provider_faults_*.py) play the same
faults in 1.5-3 s with every timing scaled down; this checks the scaling tells the truth.

Prints, per fault: lost and duplicate messages, requests (or connections) during the fault,
the circuit's openings, and seconds from the end of the fault to the last message.

Usage: .venv/bin/python bench/provider_outage.py [--fault twilio-5xx] [--seconds 60]
       [--citizens 200] [--no-breaker]   (ANJEON_TEST_DATABASE_URL: PostgreSQL, else SQLite)"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import TEST_SECRET
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.faults import email_counts, sms_counts
from tests.dispatch.seed import email_of, phone_of, scratch_database, seed_pending
from tests.dispatch.smtp_sink import SmtpSink
from tests.dispatch.test_crash import dispatcher_env

FAULTS = ("twilio-5xx", "twilio-timeout", "twilio-429", "smtp-421", "smtp-stall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=FAULTS, default="twilio-5xx")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--citizens", type=int, default=200)
    parser.add_argument("--no-breaker", action="store_true")
    args = parser.parse_args()
    twilio, smtp = FakeTwilio().start(), SmtpSink().start()
    base = os.environ.get("ANJEON_TEST_DATABASE_URL") or "sqlite:///unused"
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            scratch_database(base, Path(tmp), "bench_outage") as url,
        ):
            seed_pending(url, citizens=args.citizens, secret=TEST_SECRET.encode())
            env = {
                **dispatcher_env(url, twilio, smtp),
                # The service's defaults, but for the pace of a short code and the batch.
                "ANJEON_TWILIO_MPS": "10",
                "ANJEON_DISPATCH_LEASE_S": "10",
                "ANJEON_DISPATCH_BATCH": "500",
                "ANJEON_DISPATCH_THREADS": "8",
                "ANJEON_DISPATCH_INTERVAL_S": "1",
            }
            if args.no_breaker:
                env["ANJEON_CIRCUIT_FAILURES"] = "1000000"
            kind = args.fault.split("-", 1)[1]
            if args.fault.startswith("twilio"):
                fault = twilio.fault(
                    kind,
                    for_s=args.seconds,
                    on_first_request=True,
                    created="alternate",
                    retry_after="5" if kind == "429" else None,
                    stall_s=15.0,
                )
            else:
                fault = smtp.fault(kind, for_s=args.seconds, on_first_request=True, stall_s=15.0)
            started = time.monotonic()
            process = subprocess.run(
                [sys.executable, "-m", "service.cli", "dispatch", "--until-idle"],
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
            )
            took = time.monotonic() - started
            if process.returncode:
                sys.exit(process.stderr[-2000:])
            _, end = fault.window
            sms = sms_counts(twilio, [phone_of(n) for n in range(args.citizens)])
            mail = email_counts(smtp, [email_of(n) for n in range(args.citizens)])
            last = max(
                [r.at for r in twilio.requests if r.answer == "201"]
                + [e.at for e in smtp.events if e.stage == "data"]
            )
            at_provider = (
                twilio.during(fault) if args.fault.startswith("twilio") else smtp.during(fault)
            )
            print(
                f"{args.fault} for {args.seconds:g} s, {args.citizens} citizens, breaker "
                f"{'off' if args.no_breaker else 'on'}: sms lost={sms.lost} "
                f"duplicate={sms.duplicate}; e-mail lost={mail.lost} "
                f"duplicate={mail.duplicate}; requests during the fault="
                f"{len(at_provider)}"
                f"; circuit opened {process.stderr.count('circuit open')} times; last message "
                f"{last - end:.1f} s after the fault ended; run {took:.0f} s"
            )
    finally:
        twilio.stop()
        smtp.stop()


if __name__ == "__main__":
    main()
