"""Rate limits (service/rate_limits.py): every rule refuses after its limit with a Retry-After,
windows free up, the daily SMS budget, client addresses behind trusted proxies, and the shared
case: two OS processes against one real Redis together stay within one limit.

Redis comes from ANJEON_TEST_REDIS_URL (.ci/run starts one and sets it); without it the Redis
legs skip locally and fail in CI."""

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError

from service import rate_limits
from service.auth import client_of
from service.config import Settings
from service.errors import ServiceUnavailable, TooManyRequests
from service.problems import install_problem_handlers
from service.rate_limits import (
    RateLimits,
    Rule,
    address_key,
    client_address,
    email_key,
    mail_domain,
    number_keys,
)
from tests.conftest import redis_url_for_tests

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("ANJEON_TEST_REDIS_URL")
SECRET = secrets.token_urlsafe(40)
HOUR = 3600


def _forget(namespace: str) -> None:
    client = redis.Redis.from_url(redis_url_for_tests("the shared-limit tests"))
    keys = list(client.scan_iter(match=f"anjeon:{namespace}/*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"test-{secrets.token_hex(6)}"
    yield name
    if REDIS_URL:
        _forget(name)


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return redis_url_for_tests("the shared-limit tests")


@pytest.fixture
def make(storage: str, namespace: str) -> Callable[..., RateLimits]:
    def build(**overrides: object) -> RateLimits:
        settings = Settings(secret_key=SECRET, rate_limit_storage=storage, **overrides)
        return RateLimits(settings, namespace=namespace)

    return build


def _refused(action: Callable[[], None]) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as caught:
        action()
    assert caught.value.status == 429
    return caught.value


# ---- each rule refuses after its limit ------------------------------------------------------


def test_registrations_per_client_address(make):
    limits = make()  # the default: 20/hour
    for _ in range(20):
        limits.take_registration("203.0.113.7")
    refusal = _refused(lambda: limits.take_registration("203.0.113.7"))
    assert refusal.rule == "client"
    assert HOUR - 5 <= refusal.retry_after_s <= HOUR
    limits.take_registration("203.0.113.8")  # another address has its own count


def test_ipv6_clients_count_per_64(make):
    limits = make(rate_limit_client="2/hour")
    limits.take_registration("2001:db8:1:2::1")
    limits.take_registration("2001:db8:1:2:ffff::9")
    assert _refused(lambda: limits.take_registration("2001:db8:1:2::77")).rule == "client"
    limits.take_registration("2001:db8:1:3::1")


def test_ipv6_networks_count_per_48_over_their_64s(make):
    """A host given a /48 (or a /56) was thousands of clients, each with its own 20 an hour."""
    limits = make(rate_limit_client="2/hour", rate_limit_client_network="3/hour")
    limits.take_registration("2001:db8:1:2::1")
    limits.take_registration("2001:db8:1:3::1")
    limits.take_resend(7, client="2001:db8:1:4::1")
    refusal = _refused(lambda: limits.take_registration("2001:db8:1:5::1"))
    assert refusal.rule == "client_network"
    assert "this network" in refusal.detail
    limits.take_registration("2001:db8:2:5::1")  # another /48
    # IPv4 has no network count: a carrier's NAT already shares one address among many.
    for n in range(1, 5):
        limits.take_registration(f"198.51.100.{n}")
    # A registration given back is given back in both counts.
    limits.give_back_registration("2001:db8:2:5::1", taken_s_ago=0)
    for n in (6, 7, 8):
        limits.take_registration(f"2001:db8:2:{n}::1")
    assert _refused(lambda: limits.take_registration("2001:db8:2:9::1")).rule == "client_network"


def test_resend_per_citizen_and_per_address(make):
    limits = make(rate_limit_client="3/hour")  # resend: 1/minute
    limits.take_resend(41, client="203.0.113.7")
    refusal = _refused(lambda: limits.take_resend(41, client="203.0.113.7"))
    assert refusal.rule == "resend"
    assert 55 <= refusal.retry_after_s <= 60
    limits.take_resend(42, client="203.0.113.7")
    limits.take_registration("203.0.113.7")  # the address's third request
    assert _refused(lambda: limits.take_resend(43, client="203.0.113.7")).rule == "client"


def test_messages_per_contact_hour_and_day(make):
    limits = make(rate_limit_contact="3/hour;4/day")
    for _ in range(3):
        limits.take_message("sms", "+821012345678")
    refusal = _refused(lambda: limits.take_message("sms", "+821012345678"))
    assert refusal.rule == "contact"
    assert HOUR - 5 <= refusal.retry_after_s <= HOUR
    limits.take_message("sms", "+821012345679")

    daily = make(rate_limit_contact="10/hour;2/day")
    daily.take_message("email", "kim@example.com")
    daily.take_message("email", "Kim+travel@Example.COM")  # the same mailbox
    refusal = _refused(lambda: daily.take_message("email", "kim+other@example.com"))
    assert refusal.rule == "contact"
    assert 86_400 - 5 <= refusal.retry_after_s <= 86_400


def test_sms_per_number_block(make):
    limits = make()  # prefix: 20/hour; KR is the home region, so no country limit
    for n in range(20):
        limits.take_message("sms", f"+8210123400{n:02d}")
    refusal = _refused(lambda: limits.take_message("sms", "+821012349999"))
    assert refusal.rule == "prefix"
    assert refusal.retry_after_s > 0
    limits.take_message("sms", "+821012350000")  # the next block


def test_sms_per_country_except_home(make):
    limits = make(rate_limit_country="3/hour")
    for block in ("9012340000", "9012350000", "9012360000"):
        limits.take_message("sms", f"+81{block}")
    refusal = _refused(lambda: limits.take_message("sms", "+819012370000"))
    assert refusal.rule == "country"
    assert refusal.retry_after_s > HOUR - 5
    for block in ("1012340000", "1012350000", "1012360000", "1012370000"):
        limits.take_message("sms", f"+82{block}")  # KR: the home region


def test_no_one_address_fills_a_number_blocks_or_a_countrys_codes(make):
    """Found by a probe: the block's and the country's limits are everyone's, and one address
    filled them (20 plain registrations held a block's codes for an hour; 180 proven ones,
    Japan's). An address gets a part of a block's plain share; proven codes have their own."""
    limits = make(rate_limit_prefix="3/hour", rate_limit_country="2/hour")
    a, b = "198.51.100.7", "203.0.113.8"
    # The default share, 5 an hour, with a block of 3: set it lower to see it refuse.
    shared = make(rate_limit_prefix="3/hour", rate_limit_prefix_client="2/hour")
    shared.take_new_contact("sms", "+821077770001", client=a)
    shared.take_new_contact("sms", "+821077770002", client=a)
    refusal = _refused(lambda: shared.take_new_contact("sms", "+821077770003", client=a))
    assert refusal.rule == "prefix_client"
    shared.take_new_contact("sms", "+821077770004", client=b)  # a stranger's code still goes
    refusal = _refused(lambda: shared.take_new_contact("sms", "+821077770005", client=b))
    assert refusal.rule == "prefix"  # the block's own limit still holds
    shared.take_new_contact("sms", "+821077779999", client=a, proven=True)  # the proven share
    # IPv6: the part is a /48's, not each /64's.
    shared.take_new_contact("sms", "+821088880001", client="2001:db8:7:1::1")
    shared.take_new_contact("sms", "+821088880002", client="2001:db8:7:2::1")
    refusal = _refused(
        lambda: shared.take_new_contact("sms", "+821088880003", client="2001:db8:7:3::1")
    )
    assert refusal.rule == "prefix_client"
    shared.take_new_contact("sms", "+821088880003", client="2001:db8:8:3::1")  # another /48

    # Japan: two proven codes fill the proven share, not the country's plain one.
    limits.take_new_contact("sms", "+819011110001", client=a, proven=True)
    limits.take_new_contact("sms", "+819022220001", client=a, proven=True)
    refusal = _refused(
        lambda: limits.take_new_contact("sms", "+819033330001", client=a, proven=True)
    )
    assert refusal.rule == "country"
    limits.take_new_contact("sms", "+819044440001", client=b)
    limits.take_new_contact("sms", "+819055550001", client=b)
    assert _refused(lambda: limits.take_message("sms", "+819066660001")).rule == "country"

    # A country's plain hour: an address has a part of it too.
    part = make(rate_limit_country="3/hour", rate_limit_country_client="2/hour")
    part.take_new_contact("sms", "+818011110001", client=a)  # Redis: numbers of their own
    part.take_new_contact("sms", "+818022220001", client=a)
    refusal = _refused(lambda: part.take_new_contact("sms", "+818033330001", client=a))
    assert refusal.rule == "country_client"
    part.take_new_contact("sms", "+818033330001", client=b)


def test_a_client_has_a_part_of_each_mail_domains_codes(make):
    """Found by a probe: with a catch-all domain a script verified 45 e-mail-only records in
    minutes (no limit counted the domain), placed them in a crisis and cried for help on each.
    A client address now has a part of each domain's codes, the registrable domain counting
    (a wildcard MX gives endless subdomains, a review found); not a limit shared by everyone,
    which strangers' made-up addresses would fill for a company's travellers. The large
    providers' inboxes are each a person's, and are not counted so."""
    a, b = "198.51.100.7", "203.0.113.8"
    limits = make(rate_limit_email_domain_client="2/hour")
    limits.take_new_contact("email", "a1@catch-all.example", client=a)
    limits.take_new_contact("email", "A2+x@s1.Catch-All.example", client=a)  # one domain
    refusal = _refused(
        lambda: limits.take_new_contact("email", "a3@s2.catch-all.example", client=a)
    )
    assert refusal.rule == "email_domain_client"
    assert "mail domain" in refusal.detail and "catch-all" not in refusal.detail
    for n in range(3):  # another client's codes to the domain: its own part, no shared one
        limits.take_new_contact("email", f"b{n}@catch-all.example", client=b)
        b = f"203.0.113.{20 + n}"
    limits.take_new_contact("email", "a4@catch-all.example", client=a, proven=True)
    limits.take_new_contact("email", "a5@other.example.co.kr", client=a)
    limits.take_new_contact("email", "a6@mail.other.example.co.kr", client=a)
    refusal = _refused(
        lambda: limits.take_new_contact("email", "a7@x.other.example.co.kr", client=a)
    )
    assert refusal.rule == "email_domain_client"  # example.co.kr's registrable domain
    for n in range(5):  # a shared provider: each inbox its own
        limits.take_new_contact("email", f"person{n}@naver.com", client=a)
    narrower = make(email_domains_shared=[], rate_limit_email_domain_client="1/hour")
    narrower.take_new_contact("email", "x@gmail.com", client=a)
    refusal = _refused(lambda: narrower.take_new_contact("email", "y@gmail.com", client=a))
    assert refusal.rule == "email_domain_client"  # no longer in the list: counted
    assert mail_domain("kim@mail.mofa.go.kr") == "mofa.go.kr"
    assert (
        mail_domain("a@[192.0.2.1]") == "[192.0.2.1]" and mail_domain("a@192.0.2.1") == "192.0.2.1"
    )
    assert mail_domain("a@one.github.io") == mail_domain("b@two.github.io") == "github.io"
    assert mail_domain("a@Example.COM.") == "example.com"


def test_refused_changes_hold_the_record_then_the_address_but_never_a_clean_record(make):
    limits = make(rate_limit_change_refused="2/hour", rate_limit_change_refused_address="3/hour")
    client = "203.0.113.40"
    for record in ("a", "a", "b"):
        limits.refused_change_room(client, record)
        limits.count_refused_change(client, record)
    assert _refused(lambda: limits.refused_change_room(client, "a")).rule == "change_refused"
    refused = _refused(lambda: limits.refused_change_room(client, "b"))
    assert refused.rule == "change_refused_address"
    limits.refused_change_room(client, "c")  # no refusal of its own: not held
    limits.refused_change_room("203.0.113.41", "b")  # from elsewhere: not held


def test_messages_per_channel(make):
    limits = make(rate_limit_global="3/hour")
    for number in ("+821012340000", "+819012340000", "+14155552671"):
        limits.take_message("sms", number)
    refusal = _refused(lambda: limits.take_message("sms", "+447700900123"))
    assert refusal.rule == "global"
    assert "too many messages" in refusal.detail
    limits.take_message("email", "kim@example.com")  # e-mail has its own count


def test_a_refused_take_counts_nothing_and_windows_free_up(make):
    limits = make(rate_limit_contact="1/hour", rate_limit_global="1/second")
    limits.take_message("sms", "+821012340000")
    refusal = _refused(lambda: limits.take_message("sms", "+821012350000"))
    assert (refusal.rule, refusal.retry_after_s) == ("global", 1)
    time.sleep(1.1)
    # Had the refused take counted its contact hit, this contact would now be refused.
    limits.take_message("sms", "+821012350000")


def test_a_window_frees_after_its_length(make):
    limits = make(rate_limit_client="2/second")
    limits.take_registration("203.0.113.7")
    limits.take_registration("203.0.113.7")
    assert _refused(lambda: limits.take_registration("203.0.113.7")).retry_after_s == 1
    time.sleep(1.05)
    limits.take_registration("203.0.113.7")


def test_refusals_are_counted_by_rule(make):
    limits = make(rate_limit_resend="1/hour")
    before = REGISTRY.get_sample_value("anjeon_rate_limited_total", {"rule": "resend"}) or 0
    limits.take_resend(7, client="203.0.113.7")
    _refused(lambda: limits.take_resend(7, client="203.0.113.7"))
    after = REGISTRY.get_sample_value("anjeon_rate_limited_total", {"rule": "resend"})
    assert after == before + 1


def test_keys_in_the_storage_hold_no_contact(namespace):
    url = redis_url_for_tests("the shared-limit tests")
    limits = RateLimits(Settings(secret_key=SECRET, rate_limit_storage=url), namespace=namespace)
    limits.take_message("email", "kim@example.com")
    limits.take_registration("203.0.113.7")
    client = redis.Redis.from_url(url)
    keys = [key.decode() for key in client.scan_iter(match=f"anjeon:{namespace}/*")]
    client.close()
    assert len(keys) == 4  # contact per hour and per day, global, client
    assert not any("example" in key or "203.0.113" in key for key in keys)


# ---- the daily SMS budget -------------------------------------------------------------------


def test_the_budget_stops_sms_once_spent_and_says_so_once(make, monkeypatch):
    limits = make(sms_daily_budget=3)
    before = REGISTRY.get_sample_value("anjeon_message_budget_exhausted_total") or 0
    charges = []
    for _ in range(3):
        assert not limits.sms_budget_spent()
        charges.append(limits.charge_sms_budget())
    assert all(c.allowed and not c.just_spent for c in charges)
    assert [c.used for c in charges] == [1, 2, 3]
    assert limits.sms_budget_spent()
    first, second = limits.charge_sms_budget(), limits.charge_sms_budget()
    assert (first.allowed, first.just_spent) == (False, True)
    assert (second.allowed, second.just_spent) == (False, False)
    assert REGISTRY.get_sample_value("anjeon_message_budget_exhausted_total") == before + 2

    monkeypatch.setattr(rate_limits, "budget_day", lambda: "2099-01-01")
    assert not limits.sms_budget_spent()
    assert limits.charge_sms_budget().allowed  # a new day, a new budget


def test_a_zero_budget_sends_no_sms(make):
    charge = make(sms_daily_budget=0).charge_sms_budget()
    assert (charge.allowed, charge.just_spent) == (False, True)


# ---- the storage ----------------------------------------------------------------------------


def test_an_unreachable_storage_is_a_503_not_a_500(namespace):
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    settings = Settings(secret_key=SECRET, rate_limit_storage="redis://127.0.0.1:1/0")
    limits = RateLimits(settings, namespace=namespace)
    with pytest.raises(ServiceUnavailable) as caught:
        limits.take_registration("203.0.113.7")
    assert caught.value.status == 503
    with pytest.raises(ServiceUnavailable):
        limits.charge_sms_budget()
    assert not limits.healthy()


def test_once_the_storage_failed_what_is_counted_here_does_not_ask_it_again_at_once(
    namespace, monkeypatch
):
    """A review: with a hung Redis each citizen's change waited out two 2 s timeouts. Once it
    failed, the storage is left alone for a few seconds, and the limits hold in the process."""
    limits = RateLimits(
        Settings(secret_key=SECRET, rate_limit_reveal="2/hour", rate_limit_change_refused="1/hour"),
        namespace=namespace,
    )
    asked: list[str] = []

    def away(*_args: object, **_kwargs: object) -> None:
        asked.append("storage")
        raise ServiceUnavailable("the rate-limit storage is unavailable")

    monkeypatch.setattr(limits, "take", away)
    monkeypatch.setattr(limits, "_room", lambda hits, here=False: away() if not here else None)
    limits.take_here_when_away(Rule.REVEAL, "consul-a")
    limits.take_here_when_away(Rule.REVEAL, "consul-a")
    assert _refused(lambda: limits.take_here_when_away(Rule.REVEAL, "consul-a")).rule == "reveal"
    limits.refused_change_room("203.0.113.50", "record")
    assert asked == ["storage"]


def test_settings_refuse_broken_limits():
    with pytest.raises(ValidationError, match="rate_limit_contact"):
        Settings(rate_limit_contact="three an hour")
    with pytest.raises(ValidationError, match="rate_limit_storage"):
        Settings(rate_limit_storage="memcached://127.0.0.1:11211")
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=["10.0.0.0/8", "proxy.internal"])


def test_trusted_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANJEON_TRUSTED_PROXIES", '["10.0.0.0/8", "2001:db8::1"]')
    assert Settings().trusted_proxies == ["10.0.0.0/8", "2001:db8::1"]


# ---- 429 as the API answers it --------------------------------------------------------------


def test_a_refusal_is_a_problem_with_retry_after(make):
    limits = make(rate_limit_client="1/hour")
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/register")
    def register() -> dict[str, str]:
        limits.take_registration("203.0.113.7")
        return {"status": "pending"}

    with TestClient(app) as client:
        assert client.post("/register").status_code == 200
        answer = client.post("/register")
    assert answer.status_code == 429
    assert answer.headers["content-type"] == "application/problem+json"
    assert HOUR - 5 <= int(answer.headers["retry-after"]) <= HOUR
    body = answer.json()
    assert body["status"] == 429
    assert body["type"] == "urn:anjeon:problem:rate-limited"
    assert "address" in body["detail"]


# ---- keys: client address, number block and country, e-mail --------------------------------

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proxies", "client"),
    [
        # No trusted proxies: whatever the header says, the socket's peer is the client.
        ("198.51.100.7", "1.1.1.1", [], "198.51.100.7"),
        # A spoofed header from a peer that is not a trusted proxy is ignored.
        ("198.51.100.7", "10.0.0.1, 1.1.1.1", PROXIES, "198.51.100.7"),
        ("10.0.0.5", "198.51.100.7", PROXIES, "198.51.100.7"),
        ("10.0.0.5", None, PROXIES, "10.0.0.5"),
        # The client wrote 1.1.1.1 itself; our proxy appended the address it saw.
        ("10.0.0.5", "1.1.1.1, 198.51.100.7", PROXIES, "198.51.100.7"),
        # Two trusted proxies in a row.
        ("10.0.0.5", "1.1.1.1, 198.51.100.7, 10.9.9.9", PROXIES, "198.51.100.7"),
        # Every hop trusted: the one farthest from us.
        ("10.0.0.5", "10.1.1.1, 10.2.2.2", PROXIES, "10.1.1.1"),
        # A hop no proxy of ours wrote stops the walk at the last trusted hop.
        ("10.0.0.5", "198.51.100.7, unknown", PROXIES, "10.0.0.5"),
        ("10.0.0.5", "[2001:db8::7]:443", PROXIES, "2001:db8::7"),
        ("2001:db8:ffff::1", "198.51.100.7:5555", PROXIES, "198.51.100.7"),
        ("::ffff:198.51.100.7", "1.1.1.1", PROXIES, "198.51.100.7"),
        ("testclient", "1.1.1.1", PROXIES, "testclient"),
    ],
)
def test_client_address(peer, forwarded_for, proxies, client):
    assert client_address(peer, forwarded_for, proxies) == client


def test_address_key_groups_ipv6_by_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2::ffff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("198.51.100.7") == "198.51.100.7"


@pytest.mark.parametrize(
    ("number", "block", "country"),
    [
        ("+821012345678", "+82101234", "KR"),
        ("+18765551234", "+1876555", "JM"),  # Jamaica, not the whole of +1
        ("+14155552671", "+1415555", "US"),
        ("+23276123456", "+2327612", "SL"),
        ("+88160000000", "+8816000", "+881"),  # satellite: no one country
    ],
)
def test_number_keys(number, block, country):
    assert number_keys(number) == (block, country)


def test_number_keys_refuse_what_is_not_a_number():
    with pytest.raises(ValueError, match=r"E\.164"):
        number_keys("not a number")


def test_email_key():
    assert email_key(" Kim+Trip@Example.COM ") == "kim@example.com"
    assert email_key("kim@example.com") == "kim@example.com"
    # One Gmail inbox however it is dotted, under either domain; dots count elsewhere.
    for spelling in ("v.ictim@gmail.com", "V.I.C.T.I.M+x@GoogleMail.com", "victim@gmail.com"):
        assert email_key(spelling) == "victim@gmail.com"
    assert email_key("kim.lee@example.com") == "kim.lee@example.com"


def test_the_geocoders_one_turn_a_second_is_the_whole_services(make, storage):
    """Two processes' limiters on one Redis (two objects here: the storage is what they share)
    give one turn a second between them; the one refused is told how long to wait."""
    first = make()
    second = first if storage == "memory://" else make()
    assert first.geocoder_turn() == 0.0
    wait = second.geocoder_turn()
    assert 0 < wait <= 1


def test_every_rule_has_a_setting_and_a_message():
    for rule in Rule:
        assert (
            rule in rate_limits._FIXED
            or rule is Rule.GEOCODER  # from geocoder_per_second
            or f"rate_limit_{rule.value}" in Settings.model_fields
        )
        assert rule in rate_limits._REFUSED


# ---- the shared case: two OS processes, one limit -------------------------------------------

_WORKER = """
import json, sys
from service.config import Settings
from service.errors import TooManyRequests
from service.rate_limits import RateLimits

limits = RateLimits(Settings(), namespace=sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # both start together
accepted, waits, budget = 0, [], []
for _ in range(10):
    try:
        limits.take_registration("198.51.100.7")
        accepted += 1
    except TooManyRequests as refusal:
        waits.append(refusal.retry_after_s)
    charge = limits.charge_sms_budget()
    budget.append([charge.allowed, charge.just_spent])
print(json.dumps({"accepted": accepted, "waits": waits, "budget": budget}), flush=True)
"""


def _run_two(storage: str, namespace: str) -> list[dict]:
    env = {
        **os.environ,
        "ANJEON_SECRET_KEY": SECRET,
        "ANJEON_RATE_LIMIT_STORAGE": storage,
        "ANJEON_RATE_LIMIT_CLIENT": "10/hour",
        "ANJEON_SMS_DAILY_BUDGET": "10",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, namespace],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(worker.communicate(timeout=60)[0]) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0]
    return results


def test_two_processes_share_one_limit_through_redis(namespace):
    results = _run_two(redis_url_for_tests("the shared-limit tests"), namespace)
    assert sum(r["accepted"] for r in results) == 10
    waits = [wait for r in results for wait in r["waits"]]
    assert len(waits) == 10
    assert all(HOUR - 60 <= wait <= HOUR for wait in waits)
    charges = [charge for r in results for charge in r["budget"]]
    assert sum(allowed for allowed, _ in charges) == 10
    assert sum(just_spent for _, just_spent in charges) == 1  # duty staff told once


def test_memory_storage_counts_per_process(namespace):
    # Why several processes need Redis: with memory:// each counts alone.
    results = _run_two("memory://", namespace)
    assert [r["accepted"] for r in results] == [10, 10]


def test_limits_anyone_spends_on_a_contact_refuse_with_the_whole_window(make):
    """Any record may spend a number's limits: a Retry-After counted from the oldest hit dated
    a stranger's code to the second (probe: a resend 20 s after the owner registered got 3580,
    so the owner was registering, and when). Its whole window dates nothing."""
    limits = make(rate_limit_contact="1/hour", rate_limit_cooldown="1/10minute")
    limits.take_message("sms", "+821055570001")  # contact
    limits.take_new_contact("email", "owner@example.com")  # cooldown (and contact)
    for n in range(20):  # the block +82105558..: 20 an hour
        limits.take_message("sms", f"+8210555800{n:02d}")
    time.sleep(1.1)  # so that a wait counted from the oldest hit would be shorter
    refusals = [
        _refused(lambda: limits.take_message("sms", "+821055570001")),
        _refused(lambda: limits.take_new_contact("email", "owner@example.com")),
        _refused(lambda: limits.take_message("sms", "+821055589999")),
    ]
    assert [(r.rule, r.retry_after_s) for r in refusals] == [
        ("contact", HOUR),
        ("contact", HOUR),  # the longer of the two refusing: contact's hour, cooldown's 600 s
        ("prefix", HOUR),
    ]
    # The cooldown alone: its own whole window.
    roomy = make(rate_limit_contact="10/hour", rate_limit_cooldown="1/10minute")
    roomy.take_new_contact("email", "someone@example.com")
    time.sleep(1.1)
    alone = _refused(lambda: roomy.take_new_contact("email", "someone@example.com"))
    assert (alone.rule, alone.retry_after_s) == ("cooldown", 600)


def test_code_tries_refuse_with_the_whole_window_and_are_forgotten_once_verified(make):
    """Tries at one contact are counted before each comparison (a burst of parallel guesses
    stops at the limit); a refusal's Retry-After is the whole window (when the oldest try ends
    would date someone else's tries); a verified contact's tries are forgotten, so a stranger
    cannot tell a number its owner just verified from one nobody tried."""
    limits = make(rate_limit_code_try="3/hour;5/day")
    for _ in range(3):
        limits.take_code_try("contact-a")
    refusal = _refused(lambda: limits.take_code_try("contact-a"))
    assert refusal.rule == "code_try" and refusal.retry_after_s == HOUR
    limits.take_code_try("contact-b")  # another contact has its own count
    limits.forget_code_tries("contact-a")
    for _ in range(3):
        limits.take_code_try("contact-a")
    _refused(lambda: limits.take_code_try("contact-a"))


def test_every_forwarded_for_line_is_read_in_order():
    """Found by a probe: behind a proxy that adds its own X-Forwarded-For line after the
    client's, only the first (the client's forged one) was read, and the client chose its
    address. The lines are one list, in order."""
    app = SimpleNamespace(state=SimpleNamespace(settings=Settings(trusted_proxies=PROXIES)))
    scope = {
        "type": "http",
        "app": app,
        "client": ("10.0.0.5", 5555),
        "headers": [
            (b"x-forwarded-for", b"1.1.1.1"),  # the client's own, forged
            (b"x-forwarded-for", b"198.51.100.7"),  # our proxy's: what it saw
        ],
    }
    assert client_of(Request(scope)) == "198.51.100.7"


@pytest.mark.parametrize("windows", ["2/hour;5/day", "5/hour;2/day"])
def test_a_registration_given_back_frees_its_place_in_every_window(make, windows):
    limits = make(rate_limit_client=windows)
    # None taken: nothing to give back, and no error.
    limits.give_back_registration("203.0.113.7", taken_s_ago=0.0)
    limits.take_registration("203.0.113.7")
    limits.take_registration("203.0.113.7")
    assert _refused(lambda: limits.take_registration("203.0.113.7")).rule == "client"
    limits.give_back_registration("203.0.113.7", taken_s_ago=0.0)
    limits.take_registration("203.0.113.7")
    assert _refused(lambda: limits.take_registration("203.0.113.7")).rule == "client"
    limits.take_registration("203.0.113.8")  # another address's count was not touched


def test_a_registration_is_given_back_only_where_its_window_still_holds_it(make):
    """Found by a review: a give-back took the newest entry of every window, and in one
    shorter than the request had lasted (a 5 s wait for a geocoder turn, say) that entry was a
    later request's: a third registration got in within the same second as the second."""
    limits = make(rate_limit_client="1/second;3/hour")
    limits.take_registration("203.0.113.7")  # "B": the request given back was "A", 1.5 s ago
    limits.give_back_registration("203.0.113.7", taken_s_ago=1.5)
    assert _refused(lambda: limits.take_registration("203.0.113.7")).rule == "client"


def test_a_give_back_frees_the_hit_it_names_not_the_newest(make):
    """Found by a review: a give-back took the newest entry, and the old one it stood for left
    the window sooner than the newest would have: a client that verified its codes late got
    about half as many again. The entry nearest to when the hit was taken goes."""
    limits = make(rate_limit_client="2/2 seconds;100/hour")
    limits.take_registration("203.0.113.7")  # "A"
    time.sleep(0.8)
    limits.take_registration("203.0.113.7")  # "B"
    limits.give_back_registration("203.0.113.7", taken_s_ago=0.8)  # A's, verified late
    limits.take_registration("203.0.113.7")  # "C": B and C are counted
    time.sleep(1.4)  # A's would have left the window by now; B's and C's have not
    assert _refused(lambda: limits.take_registration("203.0.113.7")).rule == "client"


def test_a_networks_unverified_codes_are_limited_and_each_verified_one_comes_back(make, storage):
    """A /48's codes nobody verified, per channel, past which its codes are refused; a
    verified code's share comes back, and only for its own network and channel. On Redis,
    counted across processes (two RateLimits on one storage)."""
    limits = {"rate_limit_client_unverified": "2/hour", "rate_limit_contact": "100/hour"}
    one = make(**limits)
    other = make(**limits) if storage.startswith("redis") else one
    first, second = "2001:db8:9:1::1", "2001:db8:9:2::1"  # one /48
    one.take_new_contact("sms", "+821099990001", client=first)
    other.take_new_contact("sms", "+821099990002", client=second)
    refusal = _refused(lambda: one.take_new_contact("sms", "+821099990003", client=first))
    assert refusal.rule == "client_unverified"
    other.take_new_contact("email", "a@example.com", client=first)  # the other channel's own
    other.take_new_contact("sms", "+821099990003", client="2001:db8:10::1")  # another /48
    other.take_new_contact("sms", "+821099990004", client=first, proven=True)  # a proof's pool
    assert one.unverified_key("sms", first) == other.unverified_key("sms", second)
    assert one.unverified_key("sms", first) != one.unverified_key("email", first)
    one.give_back_unverified(one.unverified_key("email", first), taken_s_ago=5)
    _refused(lambda: other.take_new_contact("sms", "+821099990005", client=first))
    other.give_back_unverified(one.unverified_key("sms", first), taken_s_ago=5)
    one.take_new_contact("sms", "+821099990005", client=first)
    last = _refused(lambda: one.take_new_contact("sms", "+821099990006", client=first))
    assert last.rule == "client_unverified"
    # Admission asks for a proof up front while a channel's share is full, counting nothing.
    assert _refused(lambda: one.take_registration(second)).rule == "client_unverified"
    other.take_registration("2001:db8:10::1")  # another /48's share has room
