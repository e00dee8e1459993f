"""Past its address's registration limit (a roaming carrier's NAT, a hotel's Wi-Fi: thousands of
travellers behind one address in a crisis), a registration is admitted by a solved proof of
work: once per solution, within rate_limit_client_proven; a stale, forged or reused one admits
nothing and stores nothing."""

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from altcha.v1 import solve_challenge
from fastapi.testclient import TestClient
from limits import parse_many
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.citizens import proof
from service.citizens.models import Citizen, ContactCode
from service.config import Settings
from service.db import utcnow
from service.rate_limits import _FIXED, Rule
from tests.builders import citizen_body
from tests.conftest import bound_client, make_settings

KEY = b"k" * 32
SMALL = 5_000  # a challenge the suite solves in milliseconds
_COUNT = select(func.count()).select_from(Citizen)


def solved(challenge: dict, *, number: int | None = None, **changed: object) -> str:
    """The X-Anjeon-Proof value of a challenge: its solution, or `number`, and `changed`."""
    if number is None:
        found = solve_challenge(
            challenge["challenge"], challenge["salt"], "SHA-256", challenge["maxNumber"]
        )
        number = found.number
    payload = {**{k: challenge[k] for k in ("algorithm", "challenge", "salt", "signature")}}
    payload.update(number=number, **changed)
    return base64.b64encode(json.dumps(payload).encode()).decode()


# ---- the proof itself ---------------------------------------------------------------------


def test_a_solution_holds_and_forgeries_do_not():
    challenge = proof.new_challenge(KEY, max_number=SMALL, now=utcnow())
    right = solved(challenge)
    found = proof.checked(right, KEY)
    assert found is not None and found.signature == challenge["signature"]
    number = json.loads(base64.b64decode(right))["number"]
    assert proof.checked(right, b"x" * 32) is None  # another key signed it
    refused = {
        "a wrong number": solved(challenge, number=number + 1),
        "a cheaper hash": solved(challenge, algorithm="SHA-1"),
        "a salt without its expiry": solved(challenge, salt=challenge["salt"].split("?")[0]),
        "not base64": "not base64!",
        "base64 of a list": base64.b64encode(b"[1, 2]").decode(),
        "base64 of text": base64.b64encode(b"hello").decode(),
        "a salt that is a number": solved(challenge, salt=5),
        "too long": right + "A" * 4096,
        "empty": "",
        "absent": None,
    }
    for why, payload in refused.items():
        assert proof.checked(payload, KEY) is None, why


def test_a_challenge_signed_before_a_key_rotation_holds_while_its_key_is_listed():
    before = proof.new_challenge(KEY, max_number=SMALL, now=utcnow())
    newer = b"n" * 32
    assert proof.checked(solved(before), newer) is None
    assert proof.checked(solved(before), newer, previous=[KEY]) is not None
    after = proof.new_challenge(newer, max_number=SMALL, now=utcnow())
    assert proof.checked(solved(after), newer, previous=[KEY]) is not None
    assert proof.checked(solved(after), KEY) is None


def test_a_challenge_expires_after_its_life():
    stale = proof.new_challenge(
        KEY, max_number=SMALL, now=utcnow() - proof.CHALLENGE_LIFE - timedelta(seconds=5)
    )
    assert proof.checked(solved(stale), KEY) is None
    fresh = proof.new_challenge(KEY, max_number=SMALL, now=utcnow())
    assert proof.checked(solved(fresh), KEY) is not None


# ---- through the API ----------------------------------------------------------------------


@pytest.fixture
def crowded(database_url: str, db: Session) -> Iterator[TestClient]:
    """An address allowed one plain registration an hour and three proven ones."""
    settings = make_settings(
        database_url,
        rate_limit_client="1/hour",
        rate_limit_client_proven="3/hour",
        registration_proof_max_number=SMALL,
    )
    with bound_client(settings, db) as client:
        yield client


def challenge_of(client: TestClient) -> dict:
    answer = client.get("/v1/citizens/proof")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    return answer.json()


def test_past_the_limit_a_solved_proof_admits_one_registration(crowded, db):
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    refused = crowded.post("/v1/citizens", json=citizen_body())
    assert refused.status_code == 429
    assert refused.json()["proof"] == "/v1/citizens/proof"
    assert "X-Anjeon-Proof" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0
    before = db.scalar(_COUNT)

    proven = solved(challenge_of(crowded))
    admitted = crowded.post("/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": proven})
    assert admitted.status_code == 201, admitted.text
    assert db.scalar(_COUNT) == before + 1

    # The same solution again: refused, and nothing stored.
    again = crowded.post("/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": proven})
    assert again.status_code == 429
    assert "used already" in again.json()["detail"]
    assert db.scalar(_COUNT) == before + 1


def test_a_forged_or_stale_proof_is_the_plain_refusal_and_stores_nothing(crowded, db):
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    before = db.scalar(_COUNT)
    challenge = challenge_of(crowded)
    right = json.loads(base64.b64decode(solved(challenge)))["number"]
    for forged in (solved(challenge, number=right + 1), "garbage", "A" * 5000):
        answer = crowded.post(
            "/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": forged}
        )
        assert answer.status_code == 429
        assert answer.json()["proof"] == "/v1/citizens/proof"
    assert db.scalar(_COUNT) == before


def test_proofs_from_one_address_stop_at_rate_limit_client_proven(crowded, db):
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    for _ in range(3):
        proven = solved(challenge_of(crowded))
        admitted = crowded.post(
            "/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": proven}
        )
        assert admitted.status_code == 201
    before = db.scalar(_COUNT)
    proven = solved(challenge_of(crowded))
    refused = crowded.post("/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": proven})
    assert refused.status_code == 429
    # No proof helps now: the answer offers none.
    assert "proof" not in refused.json() and "even with proofs" in refused.json()["detail"]
    assert db.scalar(_COUNT) == before


def test_with_proofs_turned_off_the_limit_is_a_wall(database_url, db):
    settings = make_settings(
        database_url, rate_limit_client="1/hour", registration_proof_max_number=0
    )
    with bound_client(settings, db) as client:
        assert client.get("/v1/citizens/proof").status_code == 404
        assert client.post("/v1/citizens", json=citizen_body()).status_code == 201
        refused = client.post("/v1/citizens", json=citizen_body())
    assert refused.status_code == 429 and "proof" not in refused.json()


def test_a_challenge_is_signed_with_the_service_secret(crowded):
    """Another service's (or an old secret's) challenge admits nothing here."""
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    elsewhere = proof.new_challenge(b"o" * 32, max_number=SMALL, now=utcnow())
    answer = crowded.post(
        "/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": solved(elsewhere)}
    )
    assert answer.status_code == 429


def test_a_payload_nested_too_deep_is_refused_not_a_crash(crowded):
    """Found by a probe and a review: 1,400 nested brackets raised RecursionError, a 500."""
    deep = base64.b64encode(b"[" * 5000 + b"]" * 5000).decode()
    assert proof.checked(deep, KEY) is None
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    answer = crowded.post("/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": deep})
    assert answer.status_code == 429


def test_past_the_ceiling_no_challenge_is_offered(crowded):
    """Found by a probe: past rate_limit_client_proven the 429 still named a challenge, which
    the page solved for nothing."""
    assert crowded.post("/v1/citizens", json=citizen_body()).status_code == 201
    for _ in range(3):
        proven = solved(challenge_of(crowded))
        headers = {"X-Anjeon-Proof": proven}
        assert crowded.post("/v1/citizens", json=citizen_body(), headers=headers).status_code == 201
    plain = crowded.post("/v1/citizens", json=citizen_body())
    assert plain.status_code == 429 and "proof" not in plain.json()


def test_codes_of_proven_registrations_draw_on_a_pool_of_their_own(database_url, db):
    """Found by a probe: two addresses solving proofs used up the hour's codes, and a
    traveller elsewhere registered but got none. Proven registrations' codes now have their
    own pool; its end holds their codes, not everyone else's."""
    settings = make_settings(
        database_url,
        rate_limit_client="1/hour",
        rate_limit_global="3/hour",
        rate_limit_global_proven="1/hour",
        verification="required",
        registration_proof_max_number=SMALL,
    )
    email_only = {"channels": ["email"], "phone": None}
    with bound_client(settings, db) as crowded:
        elsewhere = TestClient(crowded.app, client=("203.0.113.9", 50000))
        assert crowded.post("/v1/citizens", json=citizen_body(**email_only)).status_code == 201
        for _ in range(3):  # the first proven code goes; the next two are held
            headers = {"X-Anjeon-Proof": solved(challenge_of(crowded))}
            admitted = crowded.post(
                "/v1/citizens", json=citizen_body(**email_only), headers=headers
            )
            assert admitted.status_code == 201
        traveller = elsewhere.post("/v1/citizens", json=citizen_body(**email_only))
        assert traveller.status_code == 201
    db.expire_all()
    held = [h for (h,) in db.execute(select(ContactCode.held).order_by(ContactCode.id))]
    assert held == [False, False, True, True, False]


def test_an_ipv6_network_counts_over_its_64s_and_a_proof_admits_past_it(database_url, db):
    """A host given a /48 was 65,536 clients of its own, each with rate_limit_client an hour;
    a /48 now counts as well, and past it a proof admits, as past the address's limit."""
    settings = make_settings(
        database_url,
        rate_limit_client="5/hour",
        rate_limit_client_network="2/hour",
        registration_proof_max_number=SMALL,
    )
    with bound_client(settings, db) as app:
        before = db.scalar(_COUNT)
        hosts = [TestClient(app.app, client=(f"2001:db8:5:{n}::1", 50000)) for n in (1, 2, 3)]
        assert [h.post("/v1/citizens", json=citizen_body()).status_code for h in hosts] == [
            201,
            201,
            429,
        ]
        refused = hosts[2].post("/v1/citizens", json=citizen_body())
        assert "this network" in refused.json()["detail"]
        assert refused.json()["proof"] == "/v1/citizens/proof"
        headers = {"X-Anjeon-Proof": solved(challenge_of(hosts[2]))}
        admitted = hosts[2].post("/v1/citizens", json=citizen_body(), headers=headers)
        assert admitted.status_code == 201, admitted.text
        elsewhere = TestClient(app.app, client=("2001:db8:6:1::1", 50000))
        assert elsewhere.post("/v1/citizens", json=citizen_body()).status_code == 201
    assert db.scalar(_COUNT) == before + 4


def test_proven_registrations_of_an_ipv6_network_have_a_ceiling_over_its_64s(database_url, db):
    """Found by a probe: proven registrations were bounded per /64 alone, and a /48 (a tunnel
    broker gives one away) holds 65,536 of them: one script stored registrations without end,
    a proof each. The /48 has a ceiling of its own, and past it no challenge is offered."""
    settings = make_settings(
        database_url,
        rate_limit_client="1/hour",
        rate_limit_client_network="1/hour",
        rate_limit_client_proven="2/hour",
        rate_limit_client_proven_network="3/hour",
        registration_proof_max_number=SMALL,
    )
    with bound_client(settings, db) as app:
        before = db.scalar(_COUNT)
        hosts = [TestClient(app.app, client=(f"2001:db8:7:{n}::1", 50000)) for n in range(4)]
        assert hosts[0].post("/v1/citizens", json=citizen_body()).status_code == 201  # plain
        admitted = []
        for host in hosts:  # a fresh /64 whenever its own ceiling is reached
            for _ in range(2):
                headers = {"X-Anjeon-Proof": solved(challenge_of(host))}
                admitted.append(
                    host.post("/v1/citizens", json=citizen_body(), headers=headers).status_code
                )
        assert admitted.count(201) == 3, admitted
        assert admitted[3:] == [429] * 5
        refused = hosts[3].post("/v1/citizens", json=citizen_body())
        assert refused.status_code == 429
        assert "this network" in refused.json()["detail"]
        assert "proof" not in refused.json()  # a challenge would be solved for nothing
        over = {"X-Anjeon-Proof": solved(challenge_of(hosts[3]))}
        spent = hosts[3].post("/v1/citizens", json=citizen_body(), headers=over)
        assert "this network, even with proofs of work" in spent.json()["detail"]
        elsewhere = TestClient(app.app, client=("2001:db8:8:1::1", 50000))
        assert elsewhere.post("/v1/citizens", json=citizen_body()).status_code == 201
    assert db.scalar(_COUNT) == before + 5


def test_one_address_cannot_verify_records_without_end_at_a_mail_domain_of_its_own(
    database_url, db
):
    """Found by a probe: through a catch-all domain one script had codes sent to as many
    e-mail-only records as it liked (45 in minutes), and cried for help on each. A client has
    a part of each registrable domain's codes (subdomains count as theirs); a stranger's
    codes are not held by it; a shared provider's inboxes are each someone's."""
    settings = make_settings(
        database_url,
        rate_limit_client="100/hour",
        rate_limit_email_domain_client="2/hour",
        verification="required",
        registration_proof_max_number=SMALL,
    )
    e_mail_only = {"channels": ["email"], "phone": None}
    with bound_client(settings, db) as script:
        elsewhere = TestClient(script.app, client=("203.0.113.9", 50000))
        for n in range(3):  # the third is past the address's part of the domain
            body = citizen_body(**e_mail_only, email=f"bot{n}@s{n}.catch-all.example")
            assert script.post("/v1/citizens", json=body).status_code == 201
        traveller = citizen_body(**e_mail_only, email="kim@catch-all.example")
        assert elsewhere.post("/v1/citizens", json=traveller).status_code == 201
        for n in range(4):  # a shared provider: each inbox its own
            body = citizen_body(**e_mail_only, email=f"traveller{n}@naver.com")
            assert script.post("/v1/citizens", json=body).status_code == 201
    db.expire_all()
    held = [h for (h,) in db.execute(select(ContactCode.held).order_by(ContactCode.id))]
    assert held == [False, False, True, False, False, False, False, False]


def test_one_address_cannot_hold_the_codes_of_a_number_block_or_a_country(database_url, db):
    """Found by a probe: 20 registrations from one address held every code to a block of
    numbers for an hour, and 180 proven ones every code to Japan; a traveller elsewhere got
    a 201 and no code. An address now has a part of a block's share, and proven codes a
    share of their own."""
    settings = make_settings(
        database_url,
        rate_limit_client="3/hour",
        rate_limit_prefix="3/hour",
        rate_limit_prefix_client="2/hour",
        rate_limit_country="2/hour",
        verification="required",
        registration_proof_max_number=SMALL,
    )
    sms_only = {"channels": ["sms"], "email": None}
    with bound_client(settings, db) as crowded:
        elsewhere = TestClient(crowded.app, client=("203.0.113.9", 50000))
        for n in range(3):  # the third is past the address's part of the block
            body = citizen_body(**sms_only, phone=f"+82106666000{n}")
            assert crowded.post("/v1/citizens", json=body).status_code == 201
        traveller = citizen_body(**sms_only, phone="+821066669999")
        assert elsewhere.post("/v1/citizens", json=traveller).status_code == 201
        for block in ("11", "22", "33"):  # past the address's limit: proven, to Japan
            headers = {"X-Anjeon-Proof": solved(challenge_of(crowded))}
            body = citizen_body(**sms_only, phone=f"+8190{block}110001")
            assert crowded.post("/v1/citizens", json=body, headers=headers).status_code == 201
        local_sim = citizen_body(**sms_only, phone="+819087654322")
        assert elsewhere.post("/v1/citizens", json=local_sim).status_code == 201
    db.expire_all()
    held = [h for (h,) in db.execute(select(ContactCode.held).order_by(ContactCode.id))]
    assert held == [False, False, True, False, False, False, True, False]


def test_a_code_held_by_the_clients_part_of_a_block_goes_on_a_resend_with_a_proof(database_url, db):
    """A review: behind a hotel's or a carrier's address, a traveller whose number's block had
    had its codes from that address got none, and each resend was a 429 for an hour with no
    challenge; a proof moves the code to the proven share, which the client's part does not
    hold."""
    settings = make_settings(
        database_url,
        rate_limit_prefix_client="1/hour",
        rate_limit_resend="3/minute",
        verification="required",
        registration_proof_max_number=SMALL,
    )
    sms_only = {"channels": ["sms"], "email": None}
    with bound_client(settings, db) as client:
        _registered(client, **sms_only, phone="+821077770001")  # the address's part of the block
        record, manage = _registered(client, **sms_only, phone="+821077770002")
        assert _codes(db) == [("sms", False), ("sms", True)]  # held: the part is spent
        ask = {"channel": "sms"}
        refused = client.post(f"{record}/verify/resend", json=ask, headers=manage)
        assert refused.status_code == 429 and refused.json()["proof"] == "/v1/citizens/proof"
        assert int(refused.headers["retry-after"]) >= 3600 - 5  # whole window: dates no one
        proven = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
        resent = client.post(f"{record}/verify/resend", json=ask, headers=proven)
        assert resent.status_code == 202, resent.text
    assert _codes(db)[-1] == ("sms", False)


def test_a_solution_is_remembered_longer_than_its_challenge_lives():
    """A solution is taken once under Rule.PROOF, whose window must outlast the challenge (and
    some clock skew between processes), or one solution could be used twice."""
    window = max(item.get_expiry() for item in parse_many(_FIXED[Rule.PROOF]))
    assert window >= (proof.CHALLENGE_LIFE + timedelta(minutes=5)).total_seconds()


# ---- codes asked for after registering ----------------------------------------------------


def _verifying_settings(database_url: str, *, resends: str) -> Settings:
    """As `crowded`, with codes sent (verification required), `resends` per citizen, and a
    pool of two proven codes."""
    return make_settings(
        database_url,
        rate_limit_client="1/hour",
        rate_limit_client_proven="5/hour",
        rate_limit_resend=resends,
        rate_limit_contact="10/hour",
        rate_limit_global_proven="2/hour",
        verification="required",
        registration_proof_max_number=SMALL,
    )


@pytest.fixture
def crowded_and_verifying(database_url: str, db: Session) -> Iterator[TestClient]:
    with bound_client(_verifying_settings(database_url, resends="3/minute"), db) as client:
        yield client


def _code_rows(db: Session) -> list[tuple]:
    db.expire_all()
    return db.execute(select(ContactCode.id, ContactCode.code_hash, ContactCode.sent_at)).all()


def _codes(db: Session) -> list[tuple[str, bool]]:
    db.expire_all()
    rows = db.execute(select(ContactCode.channel, ContactCode.held).order_by(ContactCode.id))
    return [(c, h) for c, h in rows]


def test_past_the_address_limit_a_proof_admits_a_resend_and_a_new_contact(
    crowded_and_verifying, db
):
    """Found in the crowd's own path: registered behind a crowded address by a proof, a
    traveller whose code did not come could not ask for another (the address's limit was a
    wall for resends and changes of contact)."""
    client = crowded_and_verifying
    email_only = {"channels": ["email"], "phone": None}
    made = client.post("/v1/citizens", json=citizen_body(**email_only))
    assert made.status_code == 201, made.text
    record = f"/v1/citizens/{made.json()['id']}"
    manage = {"Authorization": f"Bearer {made.json()['manage_token']}"}

    before = _code_rows(db)
    refused = client.post(f"{record}/verify/resend", json={"channel": "email"}, headers=manage)
    assert refused.status_code == 429 and refused.json()["proof"] == "/v1/citizens/proof"
    assert _code_rows(db) == before  # the new code went back with the request's transaction
    proven = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
    resent = client.post(f"{record}/verify/resend", json={"channel": "email"}, headers=proven)
    assert resent.status_code == 202, resent.text
    again = client.post(f"{record}/verify/resend", json={"channel": "email"}, headers=proven)
    assert again.status_code == 429 and "used already" in again.json()["detail"]

    change = {"email": "new-address@example.org"}
    refused = client.patch(record, json=change, headers=manage)
    assert refused.status_code == 429 and refused.json()["proof"] == "/v1/citizens/proof"
    assert client.get(record, headers=manage).json()["email"] != change["email"]
    proven = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
    changed = client.patch(record, json=change, headers=proven)
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == change["email"]
    # The resend's and the change's codes came out of the proven pool (two an hour): a third
    # proven code is held, not taken from everyone else's.
    assert _codes(db)[-1] == ("email", False)
    proven = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
    third = client.post(f"{record}/verify/resend", json={"channel": "email"}, headers=proven)
    assert third.status_code == 429, third.text
    assert "proof" not in third.json() and "too many messages" in third.json()["detail"]


def test_a_proof_does_not_lift_a_citizens_own_resend_limit(database_url, db):
    with bound_client(_verifying_settings(database_url, resends="2/minute"), db) as client:
        _resend_until_the_citizens_limit(client)


def _resend_until_the_citizens_limit(client: TestClient) -> None:
    made = client.post("/v1/citizens", json=citizen_body(channels=["email"], phone=None))
    record = f"/v1/citizens/{made.json()['id']}"
    manage = {"Authorization": f"Bearer {made.json()['manage_token']}"}
    for _ in range(2):
        headers = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
        answer = client.post(f"{record}/verify/resend", json={"channel": "email"}, headers=headers)
        assert answer.status_code == 202, answer.text
    unspent = solved(challenge_of(client))
    held = client.post(
        f"{record}/verify/resend",
        json={"channel": "email"},
        headers={**manage, "X-Anjeon-Proof": unspent},
    )
    assert held.status_code == 429 and "proof" not in held.json(), held.text
    # Refused by the citizen's own limit, the solution was not spent: another record takes it.
    other = client.post("/v1/citizens", json=citizen_body(), headers={"X-Anjeon-Proof": unspent})
    assert other.status_code == 201, other.text


def _registered(client: TestClient, **body: object) -> tuple[str, dict[str, str]]:
    made = client.post("/v1/citizens", json=citizen_body(**body))
    assert made.status_code == 201, made.text
    return f"/v1/citizens/{made.json()['id']}", {
        "Authorization": f"Bearer {made.json()['manage_token']}"
    }


def _unspent(client: TestClient, solution: str) -> bool:
    """Whether a solution still admits a request (spending it on a registration)."""
    answer = client.post(
        "/v1/citizens",
        json=citizen_body(channels=["email"], phone=None),
        headers={"X-Anjeon-Proof": solution},
    )
    return answer.status_code == 201


def test_no_challenge_is_offered_while_the_citizens_own_limit_refuses_too(database_url, db):
    """Found by a probe: the address's limit (an hour) and the citizen's (a minute) both
    refused; the 429 offered a challenge that the citizen's limit then refused, and said
    'retry in 3600 s' where a minute would do."""
    with bound_client(_verifying_settings(database_url, resends="1/minute"), db) as client:
        record, manage = _registered(client, channels=["email"], phone=None)
        headers = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
        ask = {"channel": "email"}
        assert client.post(f"{record}/verify/resend", json=ask, headers=headers).status_code == 202
        both = client.post(f"{record}/verify/resend", json=ask, headers=manage)
        assert both.status_code == 429 and "proof" not in both.json(), both.text
        assert "a code was sent a moment ago" in both.json()["detail"]
        assert int(both.headers["retry-after"]) <= 60


def test_a_request_that_fails_or_sends_nothing_spends_no_solution(database_url, db):
    """Found by a probe: a resend for a channel not waiting (422), a resend a contact's limit
    refused, and a PATCH that kept the number each spent the solution (and the resend)."""
    settings = _verifying_settings(database_url, resends="3/minute")
    with bound_client(settings, db) as client:
        record, manage = _registered(client, channels=["email"], phone=None)
        solution = solved(challenge_of(client))
        headers = {**manage, "X-Anjeon-Proof": solution}
        not_waiting = client.post(
            f"{record}/verify/resend", json={"channel": "sms"}, headers=headers
        )
        assert not_waiting.status_code == 422, not_waiting.text
        same = client.get(record, headers=manage).json()["email"]
        kept = client.patch(record, json={"email": same}, headers=headers)
        assert kept.status_code == 200, kept.text
        assert _unspent(client, solution)
    # A contact's own limit (one code an hour: the registration's) holds the resend's code,
    # answered as if sent (that limit is everyone's: its refusal told a stranger of others'
    # codes to the contact, a probe). The solution goes as for any resend it admits: spared
    # here, it would tell the same.
    settings = settings.model_copy(update={"rate_limit_contact": "1/hour"})
    with bound_client(settings, db) as client:
        record, manage = _registered(client, channels=["email"], phone=None)
        solution = solved(challenge_of(client))
        held = client.post(
            f"{record}/verify/resend",
            json={"channel": "email"},
            headers={**manage, "X-Anjeon-Proof": solution},
        )
        assert held.status_code == 202, held.text
        assert not _unspent(client, solution)


def test_a_proof_admits_a_resend_when_the_channels_own_pool_is_spent(database_url, db):
    """Found by a review: in a crisis the channel's pool of codes runs out, and a resend from a
    crowded address was refused without a challenge, though the proven pool its registration
    drew on had room."""
    settings = _verifying_settings(database_url, resends="3/minute").model_copy(
        update={"rate_limit_global": "1/hour"}
    )
    with bound_client(settings, db) as client:
        record, manage = _registered(client, channels=["email"], phone=None)  # the pool's one
        ask = {"channel": "email"}
        refused = client.post(f"{record}/verify/resend", json=ask, headers=manage)
        assert refused.status_code == 429 and refused.json()["proof"] == "/v1/citizens/proof"
        proven = {**manage, "X-Anjeon-Proof": solved(challenge_of(client))}
        resent = client.post(f"{record}/verify/resend", json=ask, headers=proven)
        assert resent.status_code == 202, resent.text
