"""Every staff action the issue names (issue, revise, submit, approve, reject, cancel, import,
retry, poll a feed, create, reissue or revoke a key, test send, reveal) leaves an audit entry
with the key, role, client address, what and about what; a decision's reason is kept."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from service.audit.models import AuditEntry
from service.ledger.models import Alert
from tests.advisories.builders import advisory_body, approve
from tests.advisories.feed_samples import sample
from tests.builders import register
from tests.conftest import bound_client, make_settings
from tests.dispatch.conftest import dispatcher_in, notifier_settings
from tests.dispatch.fake_twilio import Answer


def _cap() -> bytes:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    return sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml").replace(
        b"2003-06-17", tomorrow.encode()
    )


def test_each_staff_action_is_in_the_audit_log(database_url, db, staff_headers, twilio, smtp):
    settings = make_settings(database_url, **notifier_settings(twilio, smtp), approval="required")
    alice, bob, admin = staff_headers("consul"), staff_headers("consul"), staff_headers("admin")
    with bound_client(settings, db) as api:
        api.app.state.session_factory = sessionmaker(
            bind=db.connection(), join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        dispatcher = dispatcher_in(db, settings)
        citizen, _, body = register(api, location={"lat": 35.5, "lon": 139.5}, quiet_hours=None)
        phone = "+82" + body["phone"].replace("-", "")[1:]
        twilio.script(phone, Answer(400, code=21211))

        def ok(response, status=200):
            assert response.status_code == status, response.text
            return response.json()

        draft = ok(api.post("/v1/advisories", json=advisory_body(draft=True), headers=alice), 201)
        ok(api.patch(f"/v1/advisories/{draft['id']}", json={"level": 4}, headers=alice))
        ok(api.post(f"/v1/advisories/{draft['id']}/submit", headers=alice))
        ok(approve(api, draft["id"], bob))
        dispatcher.drain()  # the SMS fails for good (a scripted bad number): staff retry it
        other = ok(api.post("/v1/advisories", json=advisory_body(level=3), headers=alice), 201)
        ok(
            api.post(
                f"/v1/advisories/{other['id']}/reject", json={"reason": "not yet"}, headers=bob
            )
        )
        ok(api.post(f"/v1/advisories/{draft['id']}/cancel", headers=alice))
        imported = api.post(
            "/v1/advisories/import",
            content=_cap(),
            headers={**alice, "content-type": "application/cap+xml"},
        )
        assert imported.status_code == 201, imported.text
        ok(
            api.post(
                f"/v1/advisories/{other['id']}/test-send",
                json={"email": "desk@example.org"},
                headers=alice,
            ),
            202,
        )
        db.expire_all()
        failed = db.scalar(select(Alert.id).where(Alert.status == "failed"))
        ok(api.post(f"/v1/alerts/{failed}/retry", headers=alice))
        ok(
            api.post(
                f"/v1/citizens/{citizen}/reveal", json={"reason": "consul call"}, headers=alice
            )
        )
        key = ok(
            api.post("/v1/staff/keys", json={"name": "new", "role": "viewer"}, headers=admin), 201
        )
        ok(
            api.post(
                f"/v1/staff/keys/{key['id']}/reissue",
                json={"key_prefix": key["key_prefix"]},
                headers=admin,
            )
        )
        ok(api.post(f"/v1/staff/keys/{key['id']}/revoke", headers=admin))
        assert api.post("/v1/feeds/nope/poll", headers=admin).status_code == 404
        dispatcher.close()
    db.expire_all()
    log = list(db.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    seen = {(e.action, e.subject) for e in log}
    for action, subject in [
        ("issue advisory", draft["id"]),
        ("revise advisory", draft["id"]),
        ("POST /v1/advisories/{advisory_id}/submit", f"advisory_id={draft['id']}"),
        ("approve advisory", draft["id"]),
        ("reject advisory", other["id"]),
        ("POST /v1/advisories/{advisory_id}/cancel", f"advisory_id={draft['id']}"),
        ("import advisories", imported.json()["created"][0]),
        ("POST /v1/advisories/{advisory_id}/test-send", f"advisory_id={other['id']}"),
        ("POST /v1/alerts/{alert_id}/retry", f"alert_id={failed}"),
        ("reveal citizen", citizen),
        ("create staff key", "new"),
        ("reissue staff key", "new"),
        ("POST /v1/staff/keys/{key_id}/revoke", f"key_id={key['id']}"),
        # Named as the command line names it: a search by the key's name finds its end (a
        # probe found only its creation).
        ("revoke staff key", "new"),
        ("POST /v1/feeds/{name}/poll", "name=nope"),
    ]:
        assert (action, subject) in seen, f"no audit entry {action!r} about {subject!r}"
    reasons = {e.action: e.reason for e in log}
    assert reasons["reject advisory"] == "not yet" and reasons["reveal citizen"] == "consul call"
    assert all(e.client == "testclient" and e.role in ("consul", "admin") for e in log)
