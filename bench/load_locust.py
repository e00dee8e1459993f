"""The load generator of bench/load.py: one phase, run by locust as a library (headless, one
process, gevent), against a service on loopback. Not meant to be run by hand:

    echo '<phase as JSON>' | python bench/load_locust.py

prints one JSON line: for each request name, requests, failures and percentiles over the
measured window (after a warm-up, whose requests are dropped), and this process's CPU seconds
(if they come near the window's length, the generator was the limit, not the service).
"""

import gevent.monkey

gevent.monkey.patch_all()

import itertools
import json
import random
import resource
import sys
import time
from datetime import date, timedelta
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment
from twilio.request_validator import RequestValidator

PHASE: dict = json.loads(sys.stdin.readline() or "{}") if __name__ == "__main__" else {}
ACCOUNT_SID = "AC" + "0" * 32
RNG = random.Random(PHASE.get("phone_block"))  # noqa: S311 - places and ids, not secrets
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
RECONNECT_EVERY = 10
_numbers = itertools.count()


def next_phone() -> tuple[str, str]:
    """A Korean mobile number not used before in this run: (as typed, E.164). Each phase has
    its own block of 10,000,000 numbers (010-B000-0000 to 010-B999-9999)."""
    n = next(_numbers)
    block = PHASE.get("phone_block", 2) * 1000 + n // 10_000
    return f"010-{block:04d}-{n % 10_000:04d}", f"+8210{block:04d}{n % 10_000:04d}"


def citizen_body(phone: str) -> dict:
    """An SMS-only citizen somewhere in greater Tokyo, with a stay in Osaka next month, in
    English (its code SMS reads "... code is 123456 ...")."""
    start = date.today() + timedelta(days=30)
    return {
        "name": "Load Test",
        "phone": phone,
        "language": "en",
        "channels": ["sms"],
        "consent": True,
        "location": {"lat": RNG.uniform(35.55, 35.80), "lon": RNG.uniform(139.5, 139.9)},
        "stays": [
            {
                "lat": 34.69,
                "lon": 135.50,
                "from": start.isoformat(),
                "to": (start + timedelta(days=5)).isoformat(),
            }
        ],
        "quiet_hours": None,
    }


class User(FastHttpUser):
    """Each user asks the service to close its connection after every RECONNECT_EVERY
    requests and opens a new one. uvicorn's workers share one listening socket and a worker
    accepts every connection waiting when it wakes: a user that kept one connection for the
    whole phase would stay on whichever worker took it, and one worker may take them all."""

    abstract = True
    wait_time = constant(0)
    sent = 0

    def closing(self) -> dict[str, str]:
        self.sent += 1
        return {"Connection": "close"} if self.sent % RECONNECT_EVERY == 0 else {}


class Register(User):
    """A registration burst: POST /v1/citizens as fast as the service answers."""

    @task
    def register(self) -> None:
        phone, _ = next_phone()
        self.client.post(
            "/v1/citizens", json=citizen_body(phone), headers=self.closing(), name="register"
        )


class RegisterVerify(User):
    """Register, read the code the service sent (from the fake Twilio, which holds the request
    until the SMS has come), and verify it: the whole enrolment of one citizen."""

    @task
    def register_verify(self) -> None:
        phone, e164 = next_phone()
        with self.client.post(
            "/v1/citizens",
            json=citizen_body(phone),
            name="register (verify phase)",
            catch_response=True,
        ) as answer:
            if answer.status_code != 201:
                answer.failure(f"register answered {answer.status_code}")
                return
            registered = answer.json()
        with self.client.get(
            f"{PHASE['twilio']}/_bench/code?{urlencode({'to': e164})}",
            name="fake twilio: code",
            catch_response=True,
        ) as sms:
            if sms.status_code != 200:
                sms.failure("no code reached the fake Twilio")
                return
            code = sms.text
        self.client.post(
            f"/v1/citizens/{registered['id']}/verify",
            json={"channel": "sms", "code": code},
            headers={"Authorization": f"Bearer {registered['manage_token']}", **self.closing()},
            name="register_verify",
        )


def _signed_post(user: User, url: str, form: dict[str, str], name: str) -> None:
    """POST as Twilio does: the form, signed over the full URL with the account's auth token."""
    signature = RequestValidator(PHASE["auth_token"]).compute_signature(url, form)
    user.client.post(
        url[len(PHASE["public"]) :],
        data=urlencode(form),
        headers={**FORM, "X-Twilio-Signature": signature, **user.closing()},
        name=name,
    )


_sent: list[list[str]] = PHASE.get("sent", [])
_sent_cycle = itertools.cycle(_sent) if _sent else None
_replies = itertools.count()


class StatusCallback(User):
    """Twilio's delivery reports for alerts it was really sent: "delivered" for each, in
    turn, at a fixed rate (PHASE["per_user_rps"] per user)."""

    wait_time = constant_throughput(PHASE.get("per_user_rps", 1))

    @task
    def report(self) -> None:
        sid, to, callback = next(_sent_cycle)
        form = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "From": PHASE["from"],
            "MessageSid": sid,
            "MessageStatus": "delivered",
            "SmsSid": sid,
            "SmsStatus": "delivered",
            "To": to,
        }
        _signed_post(self, callback, form, "status_callback")


class InboundReply(User):
    """Citizens who were asked "are you safe?" answer "1" (safe) by SMS, each message with
    its own MessageSid, as Twilio forwards them, as fast as the service answers."""

    @task
    def reply(self) -> None:
        _, to, _ = next(_sent_cycle)
        sid = f"SM{PHASE['phone_block']:04d}{next(_replies):028x}"
        form = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "Body": "1",
            "From": to,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": PHASE["from"],
        }
        _signed_post(self, PHASE["public"] + "/v1/webhooks/twilio/inbound", form, "inbound_reply")


class Baseline(User):
    """The bare endpoint: one indexed look-up of a citizen row by id."""

    @task
    def lookup(self) -> None:
        self.client.get(
            f"/lookup/{RNG.randint(1, PHASE['max_id'])}", headers=self.closing(), name="baseline"
        )


USERS = {
    "register": Register,
    "register_verify": RegisterVerify,
    "status_callback": StatusCallback,
    "inbound_reply": InboundReply,
    "baseline": Baseline,
}


def main() -> int:
    user_class = USERS[PHASE["name"]]
    env = Environment(user_classes=[user_class], host=PHASE["host"], events=events)
    runner = env.create_local_runner()
    errors: dict[str, int] = {}

    def count_error(name: str, exception: object, **_: object) -> None:
        key = f"{name}: {str(exception)[:120]}"
        errors[key] = errors.get(key, 0) + 1

    def on_request(name: str, exception: object = None, **kwargs: object) -> None:
        if exception is not None:
            count_error(name, exception)

    events.request.add_listener(on_request)
    spawn_rate = PHASE.get("spawn_rate", PHASE["users"])
    runner.start(PHASE["users"], spawn_rate=spawn_rate)
    gevent.sleep(PHASE["users"] / spawn_rate + PHASE["warmup_s"])
    env.stats.reset_all()
    errors.clear()
    print("measuring", flush=True)
    cpu0 = _cpu()
    started = time.monotonic()
    gevent.sleep(PHASE["seconds"])
    elapsed = time.monotonic() - started
    cpu = _cpu() - cpu0
    # Snapshot before stopping: requests cut off by the stop are not counted either way.
    rows = {}
    for (name, method), entry in env.stats.entries.items():
        rows[name] = {
            "method": method,
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": entry.num_requests / elapsed,
            "p50_ms": entry.get_response_time_percentile(0.50),
            "p95_ms": entry.get_response_time_percentile(0.95),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": entry.max_response_time,
        }
    runner.quit()
    print(
        json.dumps({"elapsed_s": elapsed, "generator_cpu_s": cpu, "rows": rows, "errors": errors}),
        flush=True,
    )
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
