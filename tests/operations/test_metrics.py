"""/metrics: labels an anonymous client cannot multiply, and figures read from the database, so
work done by another process (the CLI, a dispatch worker) shows as soon as it is committed."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from service.advisories.models import FeedState
from service.app import create_app
from service.citizens.models import Citizen
from service.db import make_engine, make_session_factory, utcnow
from service.ledger.models import Alert
from service.staff import service as staff_service
from service.staff.models import StaffKey
from tests.builders import citizen_body
from tests.conftest import TEST_SECRET, bound_client, make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.seed import scratch_database, seed_pending
from tests.dispatch.test_running_service import wait_for
from tests.geomatch.builders import advisory

HTTP_SERIES = ("anjeon_http_requests_total{", "anjeon_http_request_seconds_count{")


def series(body: str, prefixes: tuple[str, ...]) -> set[str]:
    """The label sets of the samples whose name starts with one of the prefixes."""
    return {line.rsplit(" ", 1)[0] for line in body.splitlines() if line.startswith(prefixes)}


def sample(body: str, name: str) -> float | None:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_invented_methods_and_paths_do_not_make_new_series(client):
    client.get("/metrics")  # its own series exists from here on
    before = client.get("/metrics").text
    for n in range(40):
        assert client.request(f"FOO{n}", "/healthz").status_code == 405
        assert client.request(f"BAR{n}", f"/v1/nothing-{n}").status_code == 404
        assert client.get(f"/v1/citizens/{uuid.uuid4()}").status_code == 401
        assert client.get(f"/probe-{n}/x").status_code == 404
    after = client.get("/metrics").text

    added = series(after, HTTP_SERIES) - series(before, HTTP_SERIES)
    # At most: (other, /healthz, 405), (other, unmatched, 404), (GET, template, 401),
    # (GET, unmatched, 404), for each of the two metrics; fewer if earlier tests made them.
    assert len(added) <= 8, sorted(added)
    assert "FOO" not in after and "BAR" not in after and "probe-" not in after
    assert "nothing-" not in after
    unmatched = 'anjeon_http_requests_total{method="other",route="unmatched",status="404"}'
    assert sample(after, unmatched) - (sample(before, unmatched) or 0) == 40
    healthz = 'anjeon_http_requests_total{method="other",route="/healthz",status="405"}'
    assert sample(after, healthz) - (sample(before, healthz) or 0) == 40
    template = 'anjeon_http_requests_total{method="GET",route="/v1/citizens/{citizen_id}"'
    assert f'{template},status="401"}}' in after
    for label_set in series(after, HTTP_SERIES):
        method = label_set.split('method="', 1)[1].split('"', 1)[0]
        assert method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def test_ledger_registry_and_advisory_figures_are_what_the_database_holds(database_url, tmp_path):
    with scratch_database(database_url, tmp_path, "figures") as url:
        engine = make_engine(url)
        now = utcnow()
        # Another session commits rows, as `anjeon ingest` or `anjeon dispatch` would.
        with make_session_factory(engine).begin() as session:
            live = advisory(session, area={"countries": ["JP"]})
            advisory(
                session,
                area={"countries": ["TH"]},
                effective=now - timedelta(days=2),
                expires=now - timedelta(hours=1),
            )  # past its end: expired, job or not
            advisory(session, area={"countries": ["FR"]}).status = "cancelled"
            for name, days in [("fresh", 90), ("drill", 3), ("lapsed", 1), ("gone", 90)]:
                staff_service.create_key(session, name=name, role="viewer", days=days)
            session.flush()
            keys = {k.name: k for k in session.scalars(select(StaffKey))}
            keys["lapsed"].expires_at = now - timedelta(hours=1)
            keys["gone"].revoked_at = now
            session.add_all(
                Citizen(public_id=str(uuid.uuid4()), language="ko", status=status)
                for status in ("active", "active", "active", "erased")
            )
            # Feeds as the poller left them: one failing (never a success, first polled 40
            # minutes ago), one fine, one not polled for days.
            session.add_all(
                FeedState(
                    name=name,
                    first_polled_at=now - timedelta(minutes=40),
                    last_polled_at=now - age,
                    last_outcome=outcome,
                    last_success_at=ok,
                    changed_at=ok and now - timedelta(hours=3),
                )
                for name, age, outcome, ok in (
                    ("mofa", timedelta(minutes=2), "error", None),
                    ("usgs", timedelta(minutes=1), "not-modified", now - timedelta(minutes=1)),
                    ("dropped", timedelta(days=3), "error", None),
                )
            )
            statuses = {
                ("sms", "pending"): 3,
                ("sms", "sent"): 5,
                ("sms", "failed"): 2,
                ("email", "retry_wait"): 1,
                ("email", "delivered"): 4,
                ("email", "superseded"): 1,
            }
            citizen_ids = iter(range(1, 100))
            for (channel, status), count in statuses.items():
                session.add_all(
                    Alert(
                        advisory_id=live.id,
                        revision=1,
                        citizen_id=next(citizen_ids),
                        channel=channel,
                        status=status,
                        created_at=now - timedelta(minutes=5 if status == "pending" else 1),
                        # The failed SMS: one's contact sealed under a secret not listed, the
                        # other's message could not be prepared.
                        error_code={0: "unreadable", 1: "unprepared"}.get(n)
                        if status == "failed"
                        else None,
                    )
                    for n in range(count)
                )

        feeds = tmp_path / "feeds.toml"
        feeds.write_text(
            "".join(
                f'[[feed]]\nname = "{name}"\nurl = "https://example.org/{name}"\n'
                f'format = "cap"\ninterval_s = {interval}\nenabled = {enabled}\n{stale}'
                for name, interval, enabled, stale in (
                    ("mofa", 600, "true", "stale_after_s = 7200\n"),
                    ("usgs", 120, "false", "stale_after_s = 600\n"),
                )
            )
        )
        with TestClient(create_app(make_settings(url, feeds_file=str(feeds)))) as client:
            body = client.get("/metrics").text
            assert sample(body, "anjeon_database_up") == 1
            for (channel, status), count in statuses.items():
                assert sample(body, f'anjeon_alerts{{channel="{channel}",status="{status}"}}') == (
                    count
                )
            assert sample(body, 'anjeon_alerts{channel="sms",status="delivered"}') == 0
            assert sample(body, 'anjeon_alerts_unreadable{channel="sms"}') == 1
            assert sample(body, 'anjeon_alerts_unreadable{channel="email"}') == 0
            assert sample(body, 'anjeon_alerts_unprepared{channel="sms"}') == 1
            assert sample(body, 'anjeon_alerts_unprepared{channel="email"}') == 0
            assert sample(body, 'anjeon_alert_queue_depth{channel="sms"}') == 3
            assert sample(body, 'anjeon_alert_queue_depth{channel="email"}') == 1
            assert 300 <= sample(body, 'anjeon_alert_oldest_open_seconds{channel="sms"}') < 400
            assert 60 <= sample(body, 'anjeon_alert_oldest_open_seconds{channel="email"}') < 160
            assert sample(body, 'anjeon_citizens{status="active"}') == 3
            assert sample(body, 'anjeon_citizens{status="erased"}') == 1
            assert sample(body, 'anjeon_advisories{status="active"}') == 1
            assert sample(body, 'anjeon_advisories{status="expired"}') == 1
            assert sample(body, 'anjeon_advisories{status="cancelled"}') == 1
            for state in ("active", "expiring", "expired", "revoked"):
                assert sample(body, f'anjeon_staff_keys{{status="{state}"}}') == 1, state
            assert sample(body, 'anjeon_feed_failing{feed="mofa"}') == 1
            assert sample(body, 'anjeon_feed_failing{feed="usgs"}') == 0
            assert sample(body, 'anjeon_feed_failing{feed="dropped"}') is None
            # AnjeonFeedFailing's inputs: how long since a success, and each enabled feed's
            # interval (deploy/prometheus/alerts.yml).
            assert 2400 <= sample(body, 'anjeon_feed_unfed_seconds{feed="mofa"}') < 2500
            assert 60 <= sample(body, 'anjeon_feed_unfed_seconds{feed="usgs"}') < 160
            assert sample(body, 'anjeon_feed_unfed_seconds{feed="dropped"}') is None
            assert sample(body, 'anjeon_feed_interval_seconds{feed="mofa"}') == 600
            assert sample(body, 'anjeon_feed_interval_seconds{feed="usgs"}') is None
            # AnjeonFeedStale's: how long the document has not changed (none read yet: no
            # figure), and the enabled feeds' stale_after_s.
            assert sample(body, 'anjeon_feed_unchanged_seconds{feed="mofa"}') is None
            assert 10_800 <= sample(body, 'anjeon_feed_unchanged_seconds{feed="usgs"}') < 10_900
            assert sample(body, 'anjeon_feed_stale_after_seconds{feed="mofa"}') == 7200
            assert sample(body, 'anjeon_feed_stale_after_seconds{feed="usgs"}') is None

            # More work committed elsewhere while the service runs: the queue shows it at the
            # next scrape, the totals once they are re-read (a small table: at once).
            with make_session_factory(engine).begin() as session:
                session.add_all(
                    Alert(
                        advisory_id=live.id,
                        revision=1,
                        citizen_id=next(citizen_ids),
                        channel="email",
                        status="pending",
                    )
                    for _ in range(6)
                )
            body = client.get("/metrics").text
            assert sample(body, 'anjeon_alert_queue_depth{channel="email"}') == 7
            assert wait_for(
                lambda: (
                    sample(
                        client.get("/metrics").text,
                        'anjeon_alerts{channel="email",status="pending"}',
                    )
                    == 6
                )
            )
        engine.dispose()


def test_what_the_cli_dispatcher_sends_shows_on_the_services_metrics(database_url, tmp_path):
    """The probe that found the bug: the CLI's sends were missing from the service's figures."""
    with scratch_database(database_url, tmp_path, "cli") as url:
        seed_pending(url, citizens=3, secret=TEST_SECRET.encode())
        with TestClient(create_app(make_settings(url))) as client:
            body = client.get("/metrics").text
            assert sample(body, 'anjeon_alert_queue_depth{channel="sms"}') == 3
            assert sample(body, 'anjeon_alerts{channel="sms",status="sent"}') == 0
            env = {
                **os.environ,
                "ANJEON_DATABASE_URL": url,
                "ANJEON_SECRET_KEY": TEST_SECRET,
                "ANJEON_LOG_LEVEL": "WARNING",
            }
            run = subprocess.run(
                [sys.executable, "-m", "service.cli", "dispatch", "--once"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, run.stderr
            body = client.get("/metrics").text
            assert sample(body, 'anjeon_alert_queue_depth{channel="sms"}') == 0
            assert sample(body, 'anjeon_alert_queue_depth{channel="email"}') == 0
            assert wait_for(
                lambda: all(
                    sample(
                        client.get("/metrics").text, f'anjeon_alerts{{channel="{c}",status="sent"}}'
                    )
                    == 3
                    for c in ("sms", "email")
                )
            )


def test_metrics_answer_while_the_database_is_down(tmp_path):
    for url in (
        "postgresql+psycopg://nobody@127.0.0.1:1/none",  # nothing listens there
        f"sqlite:///{tmp_path / 'missing.db'}",  # no such file: no tables either
    ):
        with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as client:
            response = client.get("/metrics")
        assert response.status_code == 200, url
        assert sample(response.text, "anjeon_database_up") == 0
        assert "anjeon_http_requests_total" in response.text  # the process's own counters stay
        assert "anjeon_alert_queue_depth{" not in response.text  # no figure it could not read


def test_a_rate_limit_storage_that_does_not_answer_shows_on_metrics(database_url):
    """An operator's review: with the Redis away every registration was refused (503) while
    /readyz said ready, and no figure said why."""
    down = make_settings(database_url, rate_limit_storage="redis://127.0.0.1:9/0")
    with TestClient(create_app(down)) as client:
        assert sample(client.get("/metrics").text, "anjeon_rate_limit_storage_up") == 0
        assert client.get("/readyz").status_code == 200  # on purpose: docs/faults.md
        refused = client.post("/v1/citizens", json=citizen_body())
        assert refused.status_code == 503 and "rate-limit storage" in refused.json()["detail"]
    with TestClient(create_app(make_settings(database_url))) as client:
        assert sample(client.get("/metrics").text, "anjeon_rate_limit_storage_up") == 1


def test_the_codes_left_in_each_pool_show_on_metrics_and_none_with_the_storage_away(
    database_url, db, twilio, smtp
):
    """A probe filled the service's hour of codes, and every traveller after it got a 201
    and no code, with nothing to tell the operator. anjeon_codes_left says what each
    channel's shared pools may still send (AnjeonCodesHeldForEveryone pages at 0)."""
    settings = make_settings(
        database_url,
        **notifier_settings(twilio, smtp),
        verification="required",
        rate_limit_global="2/hour",
    )
    with bound_client(settings, db) as client:
        left = 'anjeon_codes_left{channel="sms",pool="plain"}'
        assert sample(client.get("/metrics").text, left) == 2
        for n in range(3):
            body = citizen_body(channels=["sms"], email=None, phone=f"+82107777100{n}")
            assert client.post("/v1/citizens", json=body).status_code == 201
        body = client.get("/metrics").text
        assert sample(body, left) == 0 and len(twilio.messages) == 2
        assert sample(body, 'anjeon_codes_left{channel="email",pool="plain"}') == 2
        assert sample(body, 'anjeon_codes_left{channel="sms",pool="proven"}') == 200
    down = make_settings(database_url, rate_limit_storage="redis://127.0.0.1:9/0")
    with TestClient(create_app(down)) as client:
        assert sample(client.get("/metrics").text, left) is None
