"""What one registration asks of the database and of the rate-limit storage: its rows go in once
(no UPDATE after the INSERT, no DELETE of codes a new record cannot have), and each take of the
limits is one Redis round trip, all or none. Registration is the burst path of a crisis
(docs/benchmarks.md, "Load"); a statement or round trip added here costs every registrant."""

import os
import secrets
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import event, func, select

from service.citizens.models import Citizen, ContactCode
from service.config import Settings
from service.errors import TooManyRequests
from service.geomatch import service as geomatch
from service.rate_limits import RateLimits, Rule
from tests.builders import citizen_body, stay
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import notifier_settings


@pytest.fixture
def statements(engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        verb, rest = statement.split(None, 1)
        table = rest.split()[1] if verb.upper() == "INSERT" else rest.split()[0]
        seen.append(f"{verb.upper()} {table}")

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_registration_inserts_its_rows_once(database_url, db, backend, twilio, smtp, statements):
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), verification="required"
    )
    with bound_client(settings, db) as client:
        client.post("/v1/citizens", json=citizen_body(stays=[stay()]))  # warm caches
        statements.clear()
        answer = client.post("/v1/citizens", json=citizen_body(stays=[stay()]))
    assert answer.status_code == 201, answer.text
    written = [s for s in statements if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    expected = [
        "INSERT citizen",
        *["INSERT citizen_place"] * (1 if backend == "postgresql" else 2),  # one for both
        "INSERT contact_code",  # the phone's code
        "INSERT contact_code",  # the e-mail address's
    ]
    assert written == expected
    citizen = db.scalar(select(Citizen).where(Citizen.public_id == answer.json()["id"]))
    assert (citizen.notify_sms, citizen.notify_email, citizen.phone_hash) == (False, False, None)
    codes = db.scalar(select(func.count()).where(ContactCode.citizen_id == citizen.id))
    assert codes == 2  # a code for the phone and one for the e-mail address


@pytest.mark.parametrize("verification", ["required", "off"])
def test_only_a_registration_alerted_at_once_reads_places_to_match(
    database_url, db, twilio, smtp, monkeypatch, verification
):
    """A sign-up still waiting for its codes cannot match (only alerted citizens do): its
    places are matched when a contact is verified, and registering reads none back."""
    reads: list[int] = []
    real = geomatch.load_reachable

    def counted(connection, **kwargs):
        reads.append(kwargs["citizen_id"])
        return real(connection, **kwargs)

    monkeypatch.setattr(geomatch, "load_reachable", counted)
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), verification=verification
    )
    with bound_client(settings, db) as client:
        answer = client.post("/v1/citizens", json=citizen_body(stays=[stay()]))
    assert answer.status_code == 201, answer.text
    citizen = db.scalar(select(Citizen).where(Citizen.public_id == answer.json()["id"]))
    assert citizen.notify_sms == (verification == "off")
    assert reads == ([] if verification == "required" else [citizen.id])


# ---- the rate limits in Redis ---------------------------------------------------------------


@pytest.fixture
def redis_limits() -> Iterator[tuple[RateLimits, list[str]]]:
    url = os.environ.get("ANJEON_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set ANJEON_TEST_REDIS_URL")
        pytest.skip("ANJEON_TEST_REDIS_URL not set")
    namespace = f"test-{secrets.token_hex(6)}"
    settings = Settings(
        secret_key=secrets.token_urlsafe(40),
        rate_limit_storage=url,
        rate_limit_contact="1/hour",
        rate_limit_prefix="2/hour",
    )
    limits = RateLimits(settings, namespace=namespace)
    # Scripts are loaded into Redis on first use, and the server's cache is shared with the
    # other legs: load both here, the take and the library's window read behind Retry-After.
    limits.take(Rule.TEST_SEND, "warm-up")
    limits.take_message("email", "warm-up@example.com")
    with pytest.raises(TooManyRequests):
        limits.take_message("email", "warm-up@example.com")
    connection = limits._storage.get_connection()  # the client the script runs through
    commands: list[str] = []
    send = connection.execute_command

    def counted(*args, **kwargs):
        commands.append(str(args[0]))
        return send(*args, **kwargs)

    connection.execute_command = counted
    yield limits, commands
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"anjeon:{namespace}/*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_take_of_several_limits_is_one_round_trip(redis_limits):
    limits, commands = redis_limits
    limits.take_new_contact("sms", "+821055550003")  # cooldown, contact, block, global
    assert commands == ["EVALSHA"]
    commands.clear()
    with pytest.raises(TooManyRequests) as refused:
        limits.take_message("sms", "+821055550003")
    assert refused.value.rule == "contact"
    # The refusal alone: its Retry-After is the contact rule's whole window, read from no list.
    assert commands == ["EVALSHA"]


def test_a_refused_take_in_redis_counts_none_of_its_hits(redis_limits):
    limits, _ = redis_limits
    limits.take_message("sms", "+821055560004")  # the block +82105556: 1 of 2
    with pytest.raises(TooManyRequests) as refused:
        # The block has room, the contact (checked after it) has not: the block is not counted.
        limits.take_all([(Rule.PREFIX, "+82105556"), (Rule.CONTACT, "sms:+821055560004")])
    assert refused.value.rule == "contact"
    limits.take_message("sms", "+821055560005")  # the block: 2 of 2
    with pytest.raises(TooManyRequests) as refused:
        limits.take_message("sms", "+821055560006")
    assert refused.value.rule == "prefix"


def test_the_same_key_twice_in_one_take_needs_room_for_both(redis_limits):
    limits, _ = redis_limits
    with pytest.raises(TooManyRequests):
        limits.take_all([(Rule.CONTACT, "sms:+821055550005"), (Rule.CONTACT, "sms:+821055550005")])
    limits.take_message("sms", "+821055550005")  # nothing was counted: the one slot is free
