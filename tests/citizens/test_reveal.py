"""POST /v1/citizens/{id}/reveal: a consul (or admin) who states a reason gets the citizen's full
name, contacts, language and current place, uncached; the audit log keeps the reason with who
asked and about whom, and admins read it at GET /v1/audit. Real app, both backends."""

import re

import pytest
from sqlalchemy import select

from service.audit.models import AuditEntry
from service.privacy import scrub_name
from tests.builders import citizen_body, register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import notifier_settings

REASON = "No answer to the level 3 alert for Tokyo; calling to check."
TOKYO = {"lat": 35.6895, "lon": 139.6917}


def e164(korean: str) -> str:
    return "+82" + korean.replace("-", "")[1:]


def reveal(client, citizen_id: str, headers: dict[str, str], reason: object = REASON):
    return client.post(
        f"/v1/citizens/{citizen_id}/reveal", json={"reason": reason}, headers=headers
    )


def reveal_entries(db, citizen_id: str) -> list[AuditEntry]:
    db.expire_all()
    query = select(AuditEntry).where(AuditEntry.action == "reveal citizen")
    return list(db.scalars(query.where(AuditEntry.subject == citizen_id).order_by(AuditEntry.id)))


def test_a_consul_sees_name_contacts_language_and_place_and_the_reason_is_kept(
    client, db, staff_headers
):
    citizen_id, _, body = register(client, name="이서연", language="en", location=TOKYO)
    consul = staff_headers("consul")
    response = reveal(client, citizen_id, consul, reason=f"  {REASON}  ")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    revealed = response.json()
    assert revealed["id"] == citizen_id
    assert revealed["status"] == "active"
    assert revealed["name"] == "이서연"
    assert revealed["phone"] == {"address": e164(body["phone"]), "verified": True}
    assert revealed["email"] == {"address": body["email"], "verified": True}
    assert revealed["language"] == "en"
    assert revealed["channels"] == ["sms", "email"]
    assert revealed["location"]["country"] == "JP"
    assert (revealed["location"]["lat"], revealed["location"]["lon"]) == (35.6895, 139.6917)

    [entry] = reveal_entries(db, citizen_id)
    assert entry.reason == REASON  # trimmed
    assert entry.role == "consul" and entry.actor.startswith("consul-")
    assert entry.client == "testclient"
    # The request itself is recorded too, as every staff request is.
    generic = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "POST /v1/citizens/{citizen_id}/reveal")
    ).all()
    assert [e.subject for e in generic] == [f"citizen_id={citizen_id}"]


def test_admins_read_the_reveal_and_its_reason_in_the_audit_log(client, staff_headers):
    citizen_id, _, _ = register(client)
    assert reveal(client, citizen_id, staff_headers("admin")).status_code == 200
    page = client.get("/v1/audit", params={"subject": citizen_id}, headers=staff_headers("admin"))
    assert page.status_code == 200
    # The request's own entry ("citizen_id=…") is found by the id too.
    items = page.json()["items"]
    assert {i["action"] for i in items} == {
        "reveal citizen",
        "POST /v1/citizens/{citizen_id}/reveal",
    }
    [item] = [i for i in items if i["action"] == "reveal citizen"]
    assert (item["action"], item["subject"], item["reason"]) == (
        "reveal citizen",
        citizen_id,
        REASON,
    )
    assert item["role"] == "admin"


def test_a_viewer_or_no_key_is_refused_and_nothing_is_revealed(client, db, staff_headers):
    citizen_id, manage, _ = register(client)
    refused = reveal(client, citizen_id, staff_headers("viewer"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "name" not in refused.json()
    assert reveal(client, citizen_id, {}).status_code == 401
    # A citizen's own manage token is no staff key.
    assert reveal(client, citizen_id, manage).status_code == 401
    assert reveal_entries(db, citizen_id) == []


@pytest.mark.parametrize(
    ("reason", "ok"),
    [
        (None, False),
        ("", False),
        ("too short", False),  # 9 characters
        ("   short    ", False),  # 5 once trimmed
        ("x" * 10, True),
        ("x" * 500, True),
        ("x" * 501, False),
        (f"  {'x' * 500}  ", True),  # trimmed to 500
        ("Calling\x00about the quake", False),
        (["a reason in a list"], False),
        ("전화로 안부 확인이 필요합니다", True),
        ("Calling about the quake\nsecond line", True),
        # A probe's: what displays as something else in the log, read in a terminal.
        ("ok \x1b[31m\rrevealed by admin", False),
        ("Calling about gnillac\u202e the quake", False),
        ("Calling about the quake\u2028second line", False),
        ("Calling about \u200fالقاهرة\u200f now", True),  # marks, as pasted Arabic has them
    ],
)
def test_the_reason_is_required_and_ten_to_five_hundred_characters(
    client, db, staff_headers, reason, ok
):
    citizen_id, _, _ = register(client)
    response = reveal(client, citizen_id, staff_headers("consul"), reason=reason)
    if ok:
        assert response.status_code == 200, response.text
        assert [e.reason for e in reveal_entries(db, citizen_id)] == [reason.strip()]
    else:
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["reason"]
        assert reveal_entries(db, citizen_id) == []


def test_a_missing_body_names_the_reason(client, staff_headers):
    citizen_id, _, _ = register(client)
    response = client.post(
        f"/v1/citizens/{citizen_id}/reveal", json={}, headers=staff_headers("consul")
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["reason"]


def test_an_erased_or_unknown_citizen_is_not_found(client, db, staff_headers):
    consul = staff_headers("consul")
    citizen_id, manage, _ = register(client)
    assert client.delete(f"/v1/citizens/{citizen_id}", headers=manage).status_code == 204
    erased = reveal(client, citizen_id, consul)
    assert erased.status_code == 404
    assert erased.headers["content-type"] == "application/problem+json"
    assert reveal(client, "00000000-0000-0000-0000-000000000000", consul).status_code == 404
    assert reveal(client, "nul%00id", consul).status_code == 404
    assert reveal_entries(db, citizen_id) == []


def test_contacts_waiting_for_their_code_are_marked(database_url, db, staff_headers, twilio, smtp):
    settings = make_settings(
        database_url, **notifier_settings(twilio, smtp), verification="required"
    )
    with bound_client(settings, db) as app:
        body = citizen_body()
        registered = app.post("/v1/citizens", json=body)
        assert registered.status_code == 201, registered.text
        citizen_id = registered.json()["id"]
        consul = staff_headers("consul")

        waiting = reveal(app, citizen_id, consul).json()
        assert waiting["status"] == "pending"
        assert waiting["phone"] == {"address": e164(body["phone"]), "verified": False}
        assert waiting["email"] == {"address": body["email"], "verified": False}

        [sms] = twilio.messages
        code = re.search(r"\b(\d{6})\b", sms["body"]).group(1)
        manage = {"Authorization": f"Bearer {registered.json()['manage_token']}"}
        verified = app.post(
            f"/v1/citizens/{citizen_id}/verify",
            json={"channel": "sms", "code": code},
            headers=manage,
        )
        assert verified.status_code == 200, verified.text

        mixed = reveal(app, citizen_id, consul).json()
        assert mixed["status"] == "active"
        assert mixed["phone"] == {"address": e164(body["phone"]), "verified": True}
        assert mixed["email"] == {"address": body["email"], "verified": False}
        assert len(reveal_entries(db, citizen_id)) == 2


def test_the_operation_is_described_for_consuls(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/citizens/{citizen_id}/reveal"]["post"]
    assert operation["security"] == [{"staffKey": []}]
    assert {"401", "403", "404", "422"} <= set(operation["responses"])
    body = spec["components"]["schemas"]["RevealIn"]
    assert body["required"] == ["reason"]
    assert (
        body["properties"]["reason"]["minLength"],
        body["properties"]["reason"]["maxLength"],
    ) == (
        10,
        500,
    )


def test_one_key_cannot_dump_the_registry_one_reveal_at_a_time(database_url, db, staff_headers):
    """A probe revealed 48 citizens in a row with one consul key and a reason of ten 'a's.
    Reveals are now limited per staff key (ANJEON_RATE_LIMIT_REVEAL): past it a 429 that
    reveals nothing and records no reveal; another key has its own count."""
    settings = make_settings(database_url, rate_limit_reveal="3/hour")
    with bound_client(settings, db) as app:
        citizens = [register(app, location=TOKYO)[0] for _ in range(5)]
        greedy, other = staff_headers("consul"), staff_headers("consul")
        # An unknown citizen or a bad reason reveals nothing and counts nothing.
        assert reveal(app, "00000000-0000-0000-0000-000000000000", greedy).status_code == 404
        assert reveal(app, citizens[0], greedy, reason="short").status_code == 422
        for citizen_id in citizens[:3]:
            assert reveal(app, citizen_id, greedy).status_code == 200
        refused = reveal(app, citizens[3], greedy)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "revealed" in refused.json()["detail"] and "name" not in refused.json()
        assert reveal_entries(db, citizens[3]) == []
        # The refused attempt is in the log, with its reason (a probe's left no trace).
        [attempt] = db.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "refused reveal citizen", AuditEntry.subject == citizens[3]
            )
        ).all()
        assert attempt.reason.startswith("429: ") and REASON in attempt.reason
        assert attempt.status == 429
        assert reveal(app, citizens[4], other).status_code == 200


def test_a_reveal_goes_while_the_rate_limit_storage_is_away_counted_in_the_process(
    database_url, db, staff_headers
):
    """A review: with the Redis away a consul's reveal answered 503, the one staff action that
    reaches a person in danger. It is now counted in the process meanwhile."""
    with bound_client(make_settings(database_url), db) as app:
        citizens = [register(app, location=TOKYO)[0] for _ in range(3)]
    away = make_settings(
        database_url, rate_limit_storage="redis://127.0.0.1:9/0", rate_limit_reveal="2/hour"
    )
    with bound_client(away, db) as app:
        consul = staff_headers("consul")
        assert [reveal(app, c, consul).status_code for c in citizens] == [200, 200, 429]
        assert len(reveal_entries(db, citizens[0])) == 1


def test_a_reasons_phone_numbers_and_addresses_never_reach_the_audit_log(
    database_url, db, staff_headers
):
    """Found by a privacy review: a consul's reason "calling … at +821066664321" kept the
    number in clear in the append-only audit log, after the citizen erased themselves too.
    Contacts in a reason are kept as [contact], on the reveal and on its refusal alike."""
    settings = make_settings(database_url, rate_limit_reveal="1/hour")
    reason = "calling 이지움 at +82 10-6666-4321 or jiwoo.lee@example.com about the help"
    with bound_client(settings, db) as app:
        first, second = (register(app, location=TOKYO)[0] for _ in range(2))
        consul = staff_headers("consul")
        assert reveal(app, first, consul, reason=reason).status_code == 200
        assert reveal(app, second, consul, reason=reason).status_code == 429
    db.expire_all()
    kept = db.scalars(
        select(AuditEntry.reason).where(AuditEntry.subject.in_([first, second]))
    ).all()
    assert len([r for r in kept if r]) == 2, kept
    for text in filter(None, kept):
        assert "66664321" not in text.replace("-", "").replace(" ", "")
        assert "example.com" not in text and "[contact]" in text


def test_a_reasons_mention_of_the_persons_name_never_reaches_the_audit_log(
    database_url, db, staff_headers
):
    """Found by a privacy review: "calling Jane Doe back" kept her name in the append-only
    audit log beside her record's id, after she erased herself too; the console's advice not
    to name the person was the only guard. The name, its parts, and a Hangul name's given name
    alone are kept as [name], on the reveal and on its refusal alike."""
    settings = make_settings(database_url, rate_limit_reveal="1/hour")
    with bound_client(settings, db) as app:
        jane = register(app, name="Rosalind Vance", location=TOKYO)[0]
        seoyeon = register(app, name="이서연", location=TOKYO)[0]
        consul = staff_headers("consul")
        said = "calling ROSALIND VANCE back (Rosalind, or ask for Ms Vance) after her help"
        assert reveal(app, jane, consul, reason=said).status_code == 200
        hangul = "이서연 씨의 도움 요청: 서연 님께 다시 전화합니다"
        assert reveal(app, seoyeon, consul, reason=hangul).status_code == 429
    db.expire_all()
    kept = db.scalars(select(AuditEntry.reason).where(AuditEntry.subject.in_([jane, seoyeon])))
    kept = [reason for reason in kept if reason]
    assert len(kept) == 2, kept
    for reason in kept:
        assert not re.search(r"rosalind|vance|서연", reason, re.IGNORECASE), reason
        assert "[name]" in reason
    assert any(r.startswith("429:") and "도움 요청" in r for r in kept)


@pytest.mark.parametrize(
    ("name", "reason", "kept"),
    [
        # A review's: without word bounds, "An" of "Li An" took the "an" of "plan" for good.
        ("Li An", "evacuation plan with Ana for Li An", "evacuation plan with Ana for [name]"),
        ("Ta Co", "contact needs help from TA CO", "contact needs help from [name]"),
        ("Oh Minsu", "oh, minsu said so", "oh, [name] said so"),
        ("이서연", "서연님께 다시 전화", "[name]님께 다시 전화"),
        # A probe's: spaced out, the syllables were kept.
        ("김민준", "calling 김 민 준 and 민 준 again", "calling [name] and [name] again"),
        ("김민준", "김.민.준 and 김\u200b민\u200b준", "[name] and [name]"),
        ("김민준", "김 민 준님께 전화, 민 준이 받음", "[name]님께 전화, [name]이 받음"),
        # A review's: across two words, "민 준" is not the name.
        ("김민준", "시민 준비가 되었는지 확인, 김민준 님", "시민 준비가 되었는지 확인, [name] 님"),
    ],
)
def test_a_name_is_taken_out_as_words_not_out_of_other_words(name, reason, kept):
    assert scrub_name(reason, name) == kept
