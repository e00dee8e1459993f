"""Four eyes on every mass send, through the real app with approval required, the fake Twilio
and the SMTP sink: nothing reaches them before a second key approves (and the same send does
after); self-approval 403; rejection; a pending revision leaves the one in force; drafts; cancel
never waits; feed policies; the proposer hears the decision."""

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.advisories import reach
from service.advisories.approval import Decided, _already_told, lapse_ended_proposals
from service.advisories.decisions import tell_proposer
from service.advisories.feeds.config import Feed
from service.advisories.models import Advisory, AdvisoryProposal
from service.audit.models import AuditEntry
from service.db import make_engine, make_session_factory, utcnow
from service.dispatch.notifiers.registry import build_notifiers
from service.ledger.enqueue import insert_alerts
from service.ledger.models import Alert
from service.scheduler import jobs, run_job, tell_lapsed
from service.staff import service as staff_service
from service.staff.models import StaffKey
from tests.advisories.builders import SQUARE, advisory_body, approve, in_days
from tests.advisories.feed_samples import mofa_rows, sample
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.seed import scratch_database
from tests.loopback_server import serve_in_thread

TOKYO = {"lat": 35.5, "lon": 139.5}


@pytest.fixture
def app_settings(database_url, twilio, smtp):
    return make_settings(
        database_url, **notifier_settings(twilio, smtp), approval="required", approval_min_reach=5
    )


@pytest.fixture
def api(app_settings, db: Session) -> Iterator[TestClient]:
    with bound_client(app_settings, db) as client:
        # Work after the response (telling the proposer) sees the test's transaction.
        client.app.state.session_factory = sessionmaker(
            bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        yield client


@pytest.fixture
def dispatcher(db, app_settings):
    made = dispatcher_in(db, app_settings)
    yield made
    made.close()


@pytest.fixture
def alice(staff_headers):
    return staff_headers("consul")


@pytest.fixture
def bob(staff_headers):
    return staff_headers("consul")


def alerts(db) -> int:
    return db.scalar(select(func.count()).select_from(Alert)) or 0


def citizens(api, n: int = 2) -> None:
    for _ in range(n):
        register(api, location=TOKYO, quiet_hours=None)


def issue(api, headers, **overrides):
    response = api.post("/v1/advisories", json=advisory_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_key_whose_secret_the_proposer_just_issued_cannot_approve_their_proposal(api, db):
    """Found by a probe: an admin proposed a level 4, reissued a colleague's key, and approved
    with the new secret; the log said the colleague approved. A secret the proposer issued
    less than a day ago cannot approve what they proposed; one issued earlier can (every key
    is made by an admin)."""
    admin = {
        "Authorization": f"Bearer {staff_service.create_key(db, name='ahn', role='admin').key}"
    }
    staff_service.create_key(
        db, name="bae", role="consul", issued_by="ahn", now=utcnow() - timedelta(days=30)
    )
    citizens(api)
    created = issue(api, admin, level=4)
    [bae] = [k for k in api.get("/v1/staff/keys", headers=admin).json() if k["name"] == "bae"]
    reissued = api.post(
        f"/v1/staff/keys/{bae['id']}/reissue", json={"key_prefix": bae["key_prefix"]}, headers=admin
    )
    assert reissued.status_code == 200, reissued.text
    refused = approve(api, created["id"], {"Authorization": f"Bearer {reissued.json()['key']}"})
    assert refused.status_code == 403, refused.text
    assert "issued by ahn less than a day ago" in refused.json()["detail"]
    assert alerts(db) == 0
    # A second admin key of theirs, made today, reissuing it hands it over just the same.
    tool = staff_service.create_key(db, name="ops-tool", role="admin", issued_by="ahn")
    bae_now = staff_service.reissue_key(db, name="bae", replacing=None, issued_by="ops-tool")
    through = approve(api, created["id"], {"Authorization": f"Bearer {bae_now.key}"})
    assert through.status_code == 403, through.text
    assert "by way of ops-tool" in through.json()["detail"] and tool.key
    made_a_while_ago = staff_service.create_key(
        db, name="cho", role="consul", issued_by="ahn", now=utcnow() - timedelta(days=2)
    )
    approved = approve(api, created["id"], {"Authorization": f"Bearer {made_a_while_ago.key}"})
    assert approved.status_code == 200, approved.text


def test_a_level_4_waits_for_a_second_key_then_the_same_send_arrives(
    api, db, dispatcher, twilio, smtp, alice, bob
):
    citizens(api)
    created = issue(api, alice, level=4)
    assert created["status"] == "pending_approval"
    assert created["pending"]["kind"] == "issue" and created["pending"]["proposed_by"]
    dispatcher.drain()
    assert alerts(db) == 0 and twilio.messages == [] and smtp.received == []
    queue = api.get("/v1/advisories?status=pending_approval", headers=bob).json()
    assert [a["id"] for a in queue["items"]] == [created["id"]]

    own = approve(api, created["id"], alice)
    assert own.status_code == 403 and alerts(db) == 0
    approved = approve(api, created["id"], bob)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active" and approved.json()["pending"] is None
    dispatcher.drain()
    assert len(twilio.messages) == 2 and len(smtp.received) == 2
    assert api.get("/v1/advisories?status=pending_approval", headers=bob).json()["total"] == 0
    again = approve(api, created["id"], bob)
    assert again.status_code == 409


def test_rejection_says_why_and_sends_nothing(api, db, dispatcher, twilio, alice, bob):
    citizens(api)
    created = issue(api, alice, level=3)
    path = f"/v1/advisories/{created['id']}/reject"
    assert api.post(path, json={"reason": "no"}, headers=bob).status_code == 422
    # A probe's reason erased and rewrote its own line in a terminal reading the audit log.
    forged = api.post(path, json={"reason": "ok\x1b[31m\rapproved by admin"}, headers=bob)
    assert forged.status_code == 422 and "U+001B" in forged.text
    assert api.post(path, json={"reason": "wrong country"}, headers=alice).status_code == 403
    rejected = api.post(path, json={"reason": "wrong country"}, headers=bob)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["rejected_reason"] == "wrong country"
    dispatcher.drain()
    assert alerts(db) == 0 and twilio.messages == []
    assert approve(api, created["id"], bob).status_code == 409


def test_a_small_level_2_goes_at_once_and_a_big_level_1_waits(
    api, db, dispatcher, twilio, alice, bob
):
    citizens(api, 2)
    small = issue(api, alice, level=2)
    assert small["status"] == "active"
    dispatcher.drain()
    assert len(twilio.messages) == 2
    citizens(api, 4)  # 6 citizens now reached: more than approval_min_reach (5)
    big = issue(api, alice, level=1, title={"ko": "다른 경보", "en": "Another"})
    assert big["status"] == "pending_approval"


def test_sign_ups_that_never_verified_reach_nobody_and_count_nowhere(
    database_url, db, twilio, smtp, alice
):
    """Anyone can sign up with any e-mail address and never verify it. Such records are nobody
    we can tell: they do not count in the preview, in the reach that makes an advisory wait for
    a second key, in the matches, or in the registry's counts. Before, a few hundred anonymous
    sign-ups per address (per /64) made every advisory of a country wait for four eyes."""
    settings = make_settings(
        database_url,
        **notifier_settings(twilio, smtp),
        approval="required",
        approval_min_reach=5,
        verification="required",
    )
    laos = {"country": "LA"}
    with bound_client(settings, db) as app:
        for _ in range(6):
            register(app, location=laos, channels=["email"], phone=None)
        body = advisory_body(level=1, area={"countries": ["LA"]})
        preview = app.post("/v1/advisories/preview", json=body, headers=alice).json()
        assert preview["citizens"] == 0
        assert "LA" not in app.get("/v1/registry/counts", headers=alice).json()
        listed = app.get("/v1/registry/citizens?country=LA", headers=alice).json()
        assert listed["total"] == 0
        created = app.post("/v1/advisories", json=body, headers=alice).json()
        assert created["status"] == "active"
        matches = app.get(f"/v1/advisories/{created['id']}/matches", headers=alice).json()
        assert matches["items"] == []


def test_a_pending_revision_leaves_the_revision_in_force(api, db, dispatcher, twilio, alice, bob):
    citizens(api)
    created = issue(api, alice, level=2)
    dispatcher.drain()
    sent = len(twilio.messages)
    patched = api.patch(f"/v1/advisories/{created['id']}", json={"level": 4}, headers=alice)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["level"] == 2 and body["revision"] == 1 and body["status"] == "active"
    assert body["pending"]["kind"] == "revise" and body["pending"]["content"]["level"] == 4
    dispatcher.drain()
    assert len(twilio.messages) == sent
    # Another key's revision cannot jump the queue; the proposer may correct theirs.
    other = api.patch(f"/v1/advisories/{created['id']}", json={"level": 3}, headers=bob)
    assert other.status_code == 409
    queue = api.get("/v1/advisories?status=pending_approval", headers=bob).json()
    assert [a["id"] for a in queue["items"]] == [created["id"]]
    approved = approve(api, created["id"], bob).json()
    assert approved["level"] == 4 and approved["revision"] == 2 and approved["pending"] is None
    dispatcher.drain()
    assert len(twilio.messages) == sent + 2
    assert "4단계" in twilio.messages[-1]["body"] or "Level 4" in twilio.messages[-1]["body"]


def test_a_draft_is_edited_in_place_then_submitted(api, db, dispatcher, twilio, alice, bob):
    citizens(api)
    draft = issue(api, alice, level=2, draft=True)
    assert draft["status"] == "draft"
    edited = api.patch(
        f"/v1/advisories/{draft['id']}", json={"title": {"ko": "고친 제목"}}, headers=alice
    ).json()
    assert edited["revision"] == 1 and edited["title"] == {"ko": "고친 제목"}
    dispatcher.drain()
    assert alerts(db) == 0
    submitted = api.post(f"/v1/advisories/{draft['id']}/submit", headers=alice)
    assert submitted.status_code == 200 and submitted.json()["status"] == "active"
    dispatcher.drain()
    assert len(twilio.messages) == 2 and "고친 제목" in twilio.messages[0]["body"]
    assert api.post(f"/v1/advisories/{draft['id']}/submit", headers=alice).status_code == 409
    # An urgent draft goes to approval when submitted.
    urgent = issue(api, alice, level=4, draft=True)
    waiting = api.post(f"/v1/advisories/{urgent['id']}/submit", headers=alice).json()
    assert waiting["status"] == "pending_approval"


def test_the_proposer_is_told_while_another_connection_writes(
    database_url, tmp_path, app_settings, smtp
):
    """The notice reads the proposer's contact without waiting for a writer: on SQLite it
    waited for the write lock (10 s, then "database is locked", and no notice), behind any
    write, a large advisory's say."""
    with scratch_database(database_url, tmp_path, "told") as url:
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with factory.begin() as session:
            staff_service.create_key(session, name="alice", role="consul", email="alice@mofa.go.kr")
        writer = engine.connect()
        writer.begin()  # on SQLite BEGIN IMMEDIATE: the write lock, held throughout
        writer.execute(text("UPDATE staff_key SET role = role"))
        try:
            decided = Decided("adv-1", "Quake", "issue", "approved", "alice", "bob", None)
            notifiers = build_notifiers(app_settings)
            settings = app_settings
            assert tell_proposer(factory, decided=decided, notifiers=notifiers, settings=settings)
            assert [m["To"] for m in smtp.received] == ["alice@mofa.go.kr"]
        finally:
            writer.close()
            engine.dispose()


def test_cancel_never_waits_and_voids_what_was_pending(api, db, alice, bob):
    created = issue(api, alice, level=4)
    cancelled = api.post(f"/v1/advisories/{created['id']}/cancel", headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["pending"] is None
    assert approve(api, created["id"], bob).status_code == 409
    assert alerts(db) == 0


def test_the_proposer_hears_the_decision_by_email(api, db, smtp, alice, bob):
    proposer = db.scalar(select(StaffKey).order_by(StaffKey.id))
    proposer.contact_email = "alice@mofa.test"
    db.flush()
    first = issue(api, alice, level=4, title={"ko": "첫째", "en": "First"})
    approve(api, first["id"], bob)
    second = issue(api, alice, level=3, title={"ko": "둘째", "en": "Second"})
    api.post(f"/v1/advisories/{second['id']}/reject", json={"reason": "duplicate"}, headers=bob)
    told = [m for m in smtp.received if m["To"] == "alice@mofa.test"]
    assert [m["Subject"].split(":")[0][-8:] for m in told] == ["APPROVED", "REJECTED"]
    assert "duplicate" in told[1].get_body(("plain",)).get_content()
    actions = set(db.scalars(select(AuditEntry.action)))
    assert {
        "POST /v1/advisories",
        "POST /v1/advisories/{advisory_id}/approve",
        "POST /v1/advisories/{advisory_id}/reject",
    } <= actions
    [why] = db.scalars(select(AuditEntry).where(AuditEntry.action == "reject advisory"))
    assert (why.subject, why.reason, why.role) == (second["id"], "duplicate", "consul")


def _cap_file(tmp_path, severity: str, identifier: str):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    body = (
        sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml")
        .replace(b"2003-06-17", tomorrow.encode())
        .replace(b"<severity>Severe</severity>", f"<severity>{severity}</severity>".encode())
        .replace(b"KSTO1055887203", identifier.encode())
    )
    path = tmp_path / f"{identifier}.xml"
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(
    ("policy", "extreme", "minor"),
    [
        ("auto", "active", "active"),
        ("required", "pending_approval", "pending_approval"),
        ("level3+", "pending_approval", "active"),
    ],
)
def test_feed_policies(db, poll, tmp_path, policy, extreme, minor):
    statuses = []
    for severity, identifier in (("Extreme", f"X-{policy}"), ("Minor", f"M-{policy}")):
        feed = Feed.model_validate(
            {
                "name": f"cap-{severity.lower()}",
                "path": str(_cap_file(tmp_path, severity, identifier)),
                "format": "cap",
                "approval": policy,
            }
        )
        assert poll(feed, approval=None) == "updated"
        statuses.append(db.scalar(select(Advisory.status).order_by(Advisory.id.desc()).limit(1)))
    assert statuses == [extreme, minor]


def test_a_feed_without_a_policy_waits_at_level_3(db, poll, tmp_path):
    feed = Feed.model_validate(
        {"name": "plain", "path": str(_cap_file(tmp_path, "Extreme", "P-1")), "format": "cap"}
    )
    assert feed.approval == "level3+"
    poll(feed, approval=None)
    assert db.scalar(select(Advisory.status)) == "pending_approval"


def test_a_staff_import_follows_the_staff_rule(api, db, alice, bob, tmp_path):
    body = _cap_file(tmp_path, "Extreme", "S-1").read_bytes()
    imported = api.post(
        "/v1/advisories/import",
        content=body,
        headers={**alice, "content-type": "application/cap+xml"},
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["advisories"][0]["status"] == "pending_approval"
    assert alerts(db) == 0


def test_a_drill_counts_only_opted_in_citizens_and_is_listed_apart(api, alice):
    citizens(api, 6)
    register(api, location=TOKYO, quiet_hours=None, exercises=True)
    drill = issue(api, alice, level=1, exercise=True)
    assert drill["status"] == "active" and drill["exercise"] is True  # reaches 1, not 7
    real = issue(api, alice, level=1, title={"ko": "실제", "en": "Real"})
    assert real["status"] == "pending_approval"  # reaches 7 > 5
    drills = api.get("/v1/advisories?exercise=true", headers=alice).json()["items"]
    reals = api.get("/v1/advisories?exercise=false", headers=alice).json()["items"]
    assert [a["id"] for a in drills] == [drill["id"]] and [a["id"] for a in reals] == [real["id"]]
    view = api.get(f"/v1/advisories/{drill['id']}/alerts", headers=alice).json()
    assert view["exercise"] is True


def test_what_waits_cannot_be_changed_under_the_approvers_eyes(api, db, alice, bob):
    """Found in review: the proposer re-PATCHed after the approver read it, and the approver's
    press sent the new words. Now a staff proposal cannot be changed while it waits."""
    created = issue(api, alice, level=2)
    first = api.patch(f"/v1/advisories/{created['id']}", json={"level": 4}, headers=alice).json()
    read_id = first["pending"]["id"]
    swap = api.patch(
        f"/v1/advisories/{created['id']}",
        json={"level": 4, "title": {"ko": "바꿔치기"}},
        headers=alice,
    )
    assert swap.status_code == 409
    stale = api.post(
        f"/v1/advisories/{created['id']}/approve", json={"proposal_id": read_id + 1}, headers=bob
    )
    assert stale.status_code == 409
    approved = api.post(
        f"/v1/advisories/{created['id']}/approve", json={"proposal_id": read_id}, headers=bob
    ).json()
    assert approved["level"] == 4 and approved["title"] == created["title"]


def test_a_direct_revision_supersedes_what_waited(api, db, alice, bob):
    """Found in review: approving an old proposal undid a newer revision."""
    created = issue(api, alice, level=2)
    api.patch(f"/v1/advisories/{created['id']}", json={"level": 4}, headers=alice)
    fixed = api.patch(
        f"/v1/advisories/{created['id']}", json={"message": {"ko": "고친 안내"}}, headers=bob
    ).json()
    assert fixed["revision"] == 2 and fixed["pending"] is None
    assert approve(api, created["id"], bob).status_code == 409
    revisions = api.get(f"/v1/advisories/{created['id']}/revisions", headers=bob).json()
    assert [r["content"]["message"] for r in revisions][-1] == {"ko": "고친 안내"}


def test_only_the_author_edits_a_draft_and_never_approves_it(api, db, alice, bob, staff_headers):
    """Found in review: Bob edited Alice's draft, Alice submitted it, Bob approved his own
    words. Now only the author edits a draft. Found by a probe since: Bob submitted Alice's
    unfinished draft (proposed as Alice) and approved it, alone. The one who submits is now
    its proposer, and neither the author nor the one who submitted approves it."""
    draft = issue(api, alice, level=4, draft=True)
    bobs = api.patch(f"/v1/advisories/{draft['id']}", json={"level": 3}, headers=bob)
    assert bobs.status_code == 403
    submitted = api.post(f"/v1/advisories/{draft['id']}/submit", headers=bob).json()
    assert submitted["status"] == "pending_approval"
    assert (
        submitted["pending"]["proposed_by"] == api.get("/v1/staff/me", headers=bob).json()["name"]
    )
    for key in (bob, alice):
        refused = approve(api, draft["id"], key)
        assert refused.status_code == 403, refused.text
    assert alerts(db) == 0
    carol = staff_headers("consul")
    assert approve(api, draft["id"], carol).status_code == 200


def test_a_row_of_an_advisory_that_is_not_active_is_never_sent(api, db, dispatcher, twilio, alice):
    """A decision that races the queue: rows of a rejected (or pending) advisory end cancelled."""
    citizens(api, 1)
    created = issue(api, alice, level=2)
    db.execute(
        Advisory.__table__.update()
        .where(Advisory.public_id == created["id"])
        .values(status="rejected")
    )
    dispatcher.drain()
    assert twilio.messages == []
    assert set(db.scalars(select(Alert.status))) == {"cancelled"}


def test_the_approver_previews_what_waits_not_what_is_in_force(api, db, alice, bob):
    """Found in review: the preview of an advisory with a revision waiting showed the reach of
    the revision in force."""
    citizens(api, 2)  # Tokyo
    register(api, location={"lat": 48.85, "lon": 2.35}, quiet_hours=None)  # Paris
    created = issue(api, alice, level=2)
    api.patch(
        f"/v1/advisories/{created['id']}",
        json={"level": 4, "area": {"countries": ["FR"]}},
        headers=alice,
    )
    preview = api.post(f"/v1/advisories/{created['id']}/preview", headers=bob).json()
    assert preview["citizens"] == 1 and preview["by_country"] == {"FR": 1}


class _StaffHook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_proposer_without_an_email_hears_it_on_the_staff_webhook(api, db, alice, bob):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StaffHook)
    serve_in_thread(server)
    _StaffHook.received.clear()
    try:
        api.app.state.settings.staff_webhook_url = f"http://127.0.0.1:{server.server_address[1]}/"
        created = issue(api, alice, level=4)
        api.post(f"/v1/advisories/{created['id']}/reject", json={"reason": "too wide"}, headers=bob)
    finally:
        server.shutdown()
    [told] = _StaffHook.received
    assert told["event"] == "advisory.rejected" and told["advisory_id"] == created["id"]
    assert told["reason"] == "too wide" and told["proposed_by"] == created["issued_by"]


def test_what_ends_before_anyone_approves_it_leaves_the_queue_and_sends_nothing(
    api, db, dispatcher, twilio, alice, bob
):
    """A proposal past its end could never be approved (422 "expires: is in the past") and sat
    in the approvers' queue for ever (feeds' old messages did). The minute job now turns it
    down, audited: a new advisory becomes expired; a revision is dropped and the advisory in
    force stays."""
    citizens(api)
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    new = issue(api, alice, level=3, expires=soon)
    kept = issue(api, alice, level=2, expires=None, title={"ko": "계속", "en": "Stays"})
    assert kept["status"] == "active"
    revised = api.patch(
        f"/v1/advisories/{kept['id']}", json={"level": 4, "expires": soon}, headers=alice
    )
    assert revised.json()["pending"]["kind"] == "revise", revised.text
    queue = api.get("/v1/advisories?status=pending_approval", headers=bob).json()
    assert queue["total"] == 2
    dispatcher.drain()
    sent = len(twilio.messages)

    assert lapse_ended_proposals(db, now=datetime.now(UTC)) == []  # not ended yet
    later = datetime.now(UTC) + timedelta(hours=2)
    assert len(lapse_ended_proposals(db, now=later)) == 2
    db.commit()
    assert api.get("/v1/advisories?status=pending_approval", headers=bob).json()["total"] == 0
    assert api.get(f"/v1/advisories/{new['id']}", headers=bob).json()["status"] == "expired"
    stays = api.get(f"/v1/advisories/{kept['id']}", headers=bob).json()
    assert stays["status"] == "active" and stays["level"] == 2 and stays["pending"] is None
    assert approve(api, new["id"], bob).status_code == 409
    lapsed = db.scalars(
        select(AuditEntry.subject).where(AuditEntry.action == "lapse advisory proposal")
    ).all()
    assert sorted(lapsed) == sorted([new["id"], kept["id"]])
    assert lapse_ended_proposals(db, now=later) == []  # once
    dispatcher.drain()
    assert len(twilio.messages) == sent


def test_the_proposer_hears_that_their_proposal_lapsed(api, db, smtp, alice, app_settings):
    """The expiry job turns down a proposal that ended unapproved; once that has committed,
    its proposer is told, as for a consul's decision."""
    proposer = db.scalar(select(StaffKey).order_by(StaffKey.id))
    proposer.contact_email = "alice@mofa.test"
    db.flush()
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    issue(api, alice, level=3, expires=soon, title={"ko": "지진", "en": "Quake"})
    proposal = db.scalar(select(AdvisoryProposal).where(AdvisoryProposal.status == "pending"))
    ended = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    proposal.content = {**proposal.content, "expires": ended}  # its end has passed meanwhile
    db.flush()
    factory, notifiers = api.app.state.session_factory, api.app.state.dispatcher.notifiers
    after = tell_lapsed(factory, app_settings, notifiers)
    [expiry] = [j for j in jobs(app_settings, after_expiry=after) if j.id == "expire-advisories"]
    run_job(expiry, factory, app_settings)
    [told] = [m for m in smtp.received if m["To"] == "alice@mofa.test"]
    assert "REJECTED: Quake" in told["Subject"]
    assert "ended before anyone approved it" in told.get_body(("plain",)).get_content()
    run_job(expiry, factory, app_settings)  # turned down once, told once
    assert len([m for m in smtp.received if m["To"] == "alice@mofa.test"]) == 1


def test_what_replaces_an_urgent_advisory_waits_as_the_urgent_one_did(
    api, db, dispatcher, twilio, alice, bob
):
    """Found by a probe: after Bob approved Alice's level 3, Alice alone revised it to level 1,
    "No need to leave. Stay where you are", and it went to citizens at once. A revision of an
    urgent advisory now waits for a second person, whatever its own level."""
    citizens(api)
    created = issue(api, alice, level=3)
    assert approve(api, created["id"], bob).status_code == 200
    dispatcher.drain()
    sent = len(twilio.messages)
    calm = {"level": 1, "message": {"ko": "대피할 필요 없습니다", "en": "No need to leave."}}
    patched = api.patch(f"/v1/advisories/{created['id']}", json=calm, headers=alice)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["level"] == 3 and body["revision"] == 1
    assert body["pending"]["kind"] == "revise" and body["pending"]["content"]["level"] == 1
    dispatcher.drain()
    assert len(twilio.messages) == sent
    assert approve(api, created["id"], alice).status_code == 403
    approved = approve(api, created["id"], bob).json()
    assert approved["level"] == 1 and approved["revision"] == 2
    # A routine advisory's routine revision still goes at once.
    routine = issue(api, alice, level=2)
    lowered = api.patch(f"/v1/advisories/{routine['id']}", json={"level": 1}, headers=alice)
    assert lowered.json()["level"] == 1 and lowered.json()["pending"] is None


def test_an_approval_names_the_proposal_read_and_a_replaced_one_is_refused(
    api, db, alice, bob, tmp_path
):
    """Found by a probe: after Bob read Alice's imported proposal, she imported a CAP Update
    that replaced it ("EVACUATE NOW"); Bob's approval without `proposal_id` approved words he
    never read. The id is now required (422 without it); the id read is a 409; the new id,
    once read, is approved."""
    first = _cap_file(tmp_path, "Extreme", "S-1").read_bytes()
    imported = api.post(
        "/v1/advisories/import", content=first, headers={**alice, "content-type": CAP}
    )
    advisory = imported.json()["advisories"][0]
    read_id = advisory["pending"]["id"]
    sent = re.search(rb"<sent>([^<]+)</sent>", first).group(1)
    update = (
        first.replace(b"<identifier>S-1<", b"<identifier>S-2<")
        .replace(b"<msgType>Alert</msgType>", b"<msgType>Update</msgType>")
        .replace(
            b"<scope>Public</scope>",
            b"<scope>Public</scope><references>KSTO@NWS.NOAA.GOV,S-1," + sent + b"</references>",
        )
        .replace(b"<sent>" + sent, b"<sent>" + sent.replace(b"14:57:00", b"14:58:00"))
        .replace(b"SEVERE THUNDERSTORM", b"EVACUATE NOW")
    )
    replaced = api.post(
        "/v1/advisories/import", content=update, headers={**alice, "content-type": CAP}
    )
    assert replaced.status_code in (200, 201), replaced.text
    path = f"/v1/advisories/{advisory['id']}"
    now_waiting = api.get(path, headers=bob).json()["pending"]
    assert now_waiting["id"] != read_id
    unread = api.post(f"{path}/approve", headers=bob)  # no id: nothing says what was read
    assert unread.status_code == 422
    stale = api.post(f"{path}/approve", json={"proposal_id": read_id}, headers=bob)
    assert stale.status_code == 409
    assert api.get(path, headers=bob).json()["status"] == "pending_approval"
    approved = api.post(f"{path}/approve", json={"proposal_id": now_waiting["id"]}, headers=bob)
    assert approved.status_code == 200 and approved.json()["status"] == "active"


def test_a_proposal_made_after_a_direct_revision_is_not_approved_under_the_old_id(api, alice, bob):
    """Found in review: Alice proposes P1 (level 4), a direct fix at level 2 supersedes it, she
    proposes "EVACUATE NOW"; an approval of what Bob read (P1) must not approve the new one."""
    created = issue(api, alice, level=2)
    path = f"/v1/advisories/{created['id']}"
    read_id = api.patch(path, json={"level": 4}, headers=alice).json()["pending"]["id"]
    fixed = api.patch(path, json={"message": {"ko": "고친 안내"}}, headers=alice).json()
    assert fixed["pending"] is None
    swapped = api.patch(path, json={"level": 4, "title": {"ko": "즉시 대피"}}, headers=alice)
    assert swapped.json()["pending"]["id"] != read_id
    stale = api.post(f"{path}/approve", json={"proposal_id": read_id}, headers=bob)
    assert stale.status_code == 409
    assert api.post(f"{path}/approve", headers=bob).status_code == 422  # it sent P2, before
    assert api.get(path, headers=bob).json()["level"] == 2


CAP = "application/cap+xml"


def test_an_advisory_that_takes_effect_later_counts_whom_it_will_reach(
    api, db, dispatcher, twilio, alice, bob
):
    """Found by a probe: a level 2 over six citizens with `effective` two minutes ahead counted
    nobody (current locations match only once it is in effect), went out active on one key,
    and the sweep alerted all six when it took effect. The reach that makes it wait, and the
    preview, are now whom it reaches once in effect."""
    citizens(api, 6)
    later = {"effective": in_days(2 / 24 / 60), "expires": in_days(10)}
    preview = api.post("/v1/advisories/preview", json=advisory_body(**later), headers=alice)
    assert preview.json()["citizens"] == 6
    created = issue(api, alice, **later)
    assert created["status"] == "pending_approval"
    # Approved, it alerts nobody before it takes effect, and lists nobody as reached yet.
    assert approve(api, created["id"], bob).json()["status"] == "active"
    matches = api.get(f"/v1/advisories/{created['id']}/matches", headers=bob).json()
    assert matches["total"] == 0
    # A revision that moves an advisory over them, to take effect later, waits as well.
    nowhere = {"geometry": {**SQUARE, "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}}
    small = issue(api, alice, area=nowhere, title={"ko": "작은", "en": "Small"})
    assert small["status"] == "active"
    moved = api.patch(
        f"/v1/advisories/{small['id']}", json={"area": {"geometry": SQUARE}, **later}, headers=alice
    ).json()
    assert moved["revision"] == 1 and moved["pending"]["kind"] == "revise"
    dispatcher.drain()
    assert alerts(db) == 0 and twilio.messages == []


def test_new_words_for_those_already_told_wait_whatever_the_new_area_reaches(
    api, db, dispatcher, twilio, alice, bob
):
    """A review: one consul revised an approved level 2 to a speck of empty sea (reaching
    nobody, so it went at once) with a lure for its words, then asked for a roll call and
    cancelled; the citizens it had told got the lure in both. Those already told count."""
    citizens(api, 6)  # more than approval_min_reach (5)
    created = issue(api, alice, level=2)
    assert created["status"] == "pending_approval"
    assert approve(api, created["id"], bob).status_code == 200
    dispatcher.drain()
    told = len(twilio.messages)
    assert told == 6

    speck = {
        "type": "Polygon",
        "coordinates": [[[-20, -40], [-19.99, -40], [-20, -39.99], [-20, -40]]],
    }
    lure = {
        "title": {"ko": "즉시 대피 evil.example", "en": "EVACUATE now via evil.example"},
        "message": {"ko": "evil.example 에서 예약", "en": "Pay the fee at evil.example"},
        "area": {"geometry": speck, "name": {"ko": "일본 전역", "en": "all of Japan"}},
    }
    patched = api.patch(f"/v1/advisories/{created['id']}", json=lure, headers=alice)
    assert patched.status_code == 200, patched.text
    assert patched.json()["revision"] == 1 and patched.json()["pending"]["kind"] == "revise"

    asked = api.post(f"/v1/advisories/{created['id']}/rollcall", headers=alice)
    assert asked.status_code == 202, asked.text
    dispatcher.drain()
    cancelled = api.post(f"/v1/advisories/{created['id']}/cancel", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    dispatcher.drain()
    since = [m["body"] for m in twilio.messages[told:]]
    assert len(since) == 12  # six asked, six told it is lifted
    assert not [body for body in since if "evil.example" in body]
    assert all("도쿄 여행자제" in body or "Tokyo" in body for body in since)


def test_an_import_reads_the_registry_once_however_many_items_it_holds(api, db, alice, monkeypatch):
    """A review: each level 1-2 item of an import asks whether it must wait, and each asking
    read every citizen's places (30 small sea quakes in a 6 KB document took 42 CPU seconds at
    200,000 citizens, holding SQLite's one write lock). Now one read serves the whole import."""
    citizens(api, 2)
    reads: list[int] = []
    real = reach.load_reachable
    monkeypatch.setattr(reach, "load_reachable", lambda *a, **k: reads.append(1) or real(*a, **k))
    rows = [
        {"country_iso_alp2": code, "alarm_lvl": "1", "region_ty": "전체"}
        for code in ("TH", "VN", "PH", "MY", "ID")
    ]
    imported = api.post(
        "/v1/advisories/import?format=mofa",
        content=mofa_rows(*rows),
        headers={**alice, "content-type": "application/json"},
    )
    assert imported.status_code == 201, imported.text
    assert [a["status"] for a in imported.json()["advisories"]] == ["active"] * 5
    assert len(reads) == 1
    # Nothing is kept past the import: a preview reads the registry as it is then.
    preview = api.post("/v1/advisories/preview", json=advisory_body(level=1), headers=alice)
    assert preview.status_code == 200 and len(reads) == 2


@pytest.mark.parametrize(("citizens", "told"), [(10, 10), (30, 12)])
def test_those_already_told_are_counted_however_many_rows_each_has(db, citizens, told):
    """Those an advisory told, up to the threshold (12 here): read in the unique index's order,
    then, when each has many rows (20 revisions, two channels), from all of its rows."""
    rows = [
        (987654, revision, 5000 + n, channel)
        for revision in range(1, 21)
        for n in range(citizens)
        for channel in ("sms", "email")
    ]
    insert_alerts(db.connection(), rows=rows, now=utcnow())
    found = _already_told(db, SimpleNamespace(id=987654), at_most=12)
    assert len(found) == told and set(found.tolist()) <= {5000 + n for n in range(citizens)}
    assert len(_already_told(db, SimpleNamespace(id=987655), at_most=12)) == 0
