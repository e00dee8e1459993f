"""The `anjeon` command."""

import argparse
import contextlib
import faulthandler
import getpass
import logging
import os
import secrets
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service import startup
from service.advisories.feeds.config import load_feeds
from service.advisories.feeds.fetch import FetchError, fetch, read_file
from service.advisories.formats import PARSERS
from service.advisories.ingest import import_document
from service.app import create_app
from service.audit import actors
from service.audit import service as audit
from service.citizens import reseal
from service.citizens.service import Registry
from service.config import Settings, get_settings, unknown_environment
from service.db import make_engine, make_session_factory, utcnow
from service.demo import load_demo_citizens
from service.dispatch.dispatcher import Dispatcher, Tally
from service.dispatch.notifiers.registry import ENTRY_POINT_GROUP, NotifierConfigError, available
from service.dispatch.reference import CHECKIN_LINK_DAYS
from service.errors import DomainError
from service.geo.geocoding import NoGeocoder
from service.geomatch.service import Sweeper
from service.ledger import outbox
from service.logs import configure_logging
from service.metrics import JOB_RUNS
from service.migrate import upgrade
from service.privacy import PersonalDataVault
from service.scheduler import build_scheduler, stop_scheduler
from service.staff import service as staff_service
from service.staff.models import StaffKey

log = logging.getLogger("anjeon.dispatch.worker")


def _session_factory(settings: Settings) -> sessionmaker[Session]:

    engine = make_engine(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    return make_session_factory(engine)


def _refuse_unlisted_data_secrets(settings: Settings) -> None:
    """Stop start-up when personal data is sealed under a data secret the settings do not
    list (a typo in ANJEON_DATA_KEYS, an old secret dropped too soon): served, every read of
    it would fail. Checked on a sample of each column (reseal.unopened_sample)."""
    vault = settings.personal_data_vault()
    factory = _session_factory(settings)
    try:
        with factory() as session:
            if not inspect(session.connection()).has_table("help_message"):
                return  # not migrated yet: start-up says so itself
            unopened = reseal.unopened_sample(session, vault=vault)
    except SQLAlchemyError as exc:
        # A database down at start is waited out by what starts next (a review: this check
        # made the dispatcher exit where it had ridden out an outage).
        logging.getLogger("anjeon.startup").warning(
            "data secrets not checked: the database did not answer", extra={"error": str(exc)}
        )
        return
    finally:
        factory.kw["bind"].dispose()
    if unopened:
        raise RuntimeError(
            "personal data is sealed under a data secret that is not listed: "
            + "; ".join(unopened)
            + ". Listed (first seals): "
            + ", ".join(vault.fingerprints)
            + ". Check ANJEON_DATA_KEYS for a typo, and list the secret that sealed it: an "
            "older one, until `anjeon reseal --check` exits 0, or a newer one the other "
            "processes already seal under (docs/privacy.md, Rotating keys)"
        )
    # An operator checks a rotation's steps by these (docs/privacy.md: reseal must print the
    # new secret's); nothing else said which secrets a process runs with (a review).
    logging.getLogger("anjeon.startup").info(
        "data secrets listed", extra={"fingerprints": vault.fingerprints}
    )


def cmd_serve(args: argparse.Namespace) -> int:

    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    # Here as well as in each worker's app: a worker that fails it is started again by uvicorn
    # for ever, where the parent stops with exit 2 (a review's missing feeds file).
    load_feeds(settings.feeds_path())
    if args.workers > 1 and settings.rate_limit_storage.startswith("memory://"):
        # Each worker would count alone: every limit (SMS to one number, registrations from
        # one address) would be N times what it says.
        if settings.environment == "production":
            raise ValueError(
                f"--workers {args.workers} needs ANJEON_RATE_LIMIT_STORAGE pointed at a Redis "
                "that every worker shares (memory:// counts in each worker alone)"
            )
        logging.getLogger("anjeon.serve").warning(
            "%d workers counting rate limits in memory://: each counts alone, so every limit "
            "is %d times what it says (set ANJEON_RATE_LIMIT_STORAGE to a Redis)",
            args.workers,
            args.workers,
        )
    _refuse_unlisted_data_secrets(settings)
    if args.workers == 1:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            proxy_headers=False,
        )
        return 0
    # Each worker process builds its own app from the same environment (worker_app); the
    # scheduler's singleton jobs are elected by lease (service/lease.py). A new worker imports
    # the whole service before it answers the parent's health check: 5 s was too short.
    # proxy_headers=False in both: uvicorn would otherwise believe X-Forwarded-For from
    # 127.0.0.1 and rewrite the peer; only settings.trusted_proxies decides (client_of).
    uvicorn.run(
        "service.cli:worker_app",
        factory=True,
        workers=args.workers,
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        timeout_worker_healthcheck=30,
    )
    return 0


def worker_app() -> FastAPI:
    """The app of one `anjeon serve --workers N` process."""
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    return create_app(settings)


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def cmd_migrate(args: argparse.Namespace) -> int:

    upgrade(get_settings().database_url)
    print("database at the latest schema revision")
    return 0


def cmd_staff(args: argparse.Namespace) -> int:

    settings = get_settings()
    factory = _session_factory(settings)
    most_days = settings.staff_key_life_days
    try:
        with factory.begin() as session:
            if args.staff_command == "create-key":
                issued = staff_service.create_key(
                    session,
                    name=args.name,
                    role=args.role,
                    email=args.email,
                    days=args.days,
                    most_days=most_days,
                    issued_by=_cli_actor(),
                )
                _audit_cli(session, "create staff key", issued.record.name)
                print(
                    f"created {issued.record.role} key {issued.record.name!r}, good until "
                    f"{issued.record.expires_at:%Y-%m-%d %H:%M} UTC; shown only once:"
                )
                print(issued.key)
            elif args.staff_command == "reissue":
                issued = staff_service.reissue_key(
                    session,
                    name=args.name,
                    replacing=None,
                    days=args.days,
                    most_days=most_days,
                    issued_by=_cli_actor(),
                )
                _audit_cli(session, "reissue staff key", issued.record.name)
                print(
                    f"reissued {issued.record.name!r}, good until "
                    f"{issued.record.expires_at:%Y-%m-%d %H:%M} UTC (the old secret no longer "
                    "works); shown only once:"
                )
                print(issued.key)
            elif args.staff_command == "list":
                print("id\tname\trole\tkey starts\tstate")
                now = utcnow()
                for key in staff_service.list_keys(session):
                    print(
                        f"{key.id}\t{key.name}\t{key.role}\t{key.key_prefix}…\t{_state(key, now)}"
                    )
            else:
                key = staff_service.revoke_key(session, name=args.name)
                _audit_cli(session, "revoke staff key", key.name)
                print(f"revoked {key.name!r}")
    except DomainError as exc:
        # A field the service names is the command's option here.
        said = "; ".join(f"{_STAFF_OPTIONS.get(e.field, e.field)}: {e.message}" for e in exc.errors)
        print(f"error: {said or exc.detail}", file=sys.stderr)
        return 2
    return 0


_STAFF_OPTIONS = {"expires_in_days": "--days", "name": "--name", "email": "--email"}


def _state(key: StaffKey, now: datetime) -> str:
    if key.revoked_at:
        return f"revoked {key.revoked_at:%Y-%m-%d}"
    if key.expires_at <= now:
        return f"expired {key.expires_at:%Y-%m-%d}"
    return f"active until {key.expires_at:%Y-%m-%d}"


def cmd_demo(args: argparse.Namespace) -> int:

    settings = get_settings()
    registry = Registry(
        vault=settings.personal_data_vault(),
        geocoder=NoGeocoder(),
        phone_region=settings.phone_default_region,
        max_stays=settings.max_stays,
    )
    with _session_factory(settings).begin() as session:
        created = load_demo_citizens(session, registry=registry)
    for name, public_id in created:
        print(f"registered {name} as {public_id}")
    print(f"{len(created)} demo citizens added")
    if not created:
        print("the demo citizens were registered by an earlier run: nothing to add")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        if args.source.startswith(("http://", "https://")):
            data = fetch(
                args.source,
                etag=None,
                last_modified=None,
                timeout_s=settings.feed_timeout_s,
                max_bytes=settings.feed_max_bytes,
                allow_private=args.allow_private,
            ).body
        else:
            data = read_file(args.source, max_bytes=settings.feed_max_bytes)
    except (FetchError, OSError) as exc:
        print(f"error: cannot read {args.source}: {exc}", file=sys.stderr)
        return 2
    if args.feed is not None and args.feed not in {
        f.name for f in load_feeds(settings.feeds_path())
    }:
        print(f"error: --feed: no feed named {args.feed!r} in the feeds file", file=sys.stderr)
        return 2
    try:
        with _session_factory(settings).begin() as session:
            summary = import_document(
                session,
                format_name=args.format,
                data=data,
                issued_by=f"{actors.CLI}{args.source}"[:100],
                now=args.as_of or utcnow(),
                max_vertices=settings.max_area_vertices,
                policy=settings.approval_policy(),  # type: ignore[arg-type]
                min_reach=settings.approval_min_reach,
                for_feed=args.feed,
            )
            lines = summary.lines()
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _cli_actor() -> str:
    """The server's shell's user, as the audit log and a key's issued_by name them."""
    return f"{actors.CLI}{getpass.getuser()}"[:100]


def _audit_cli(session: Session, action: str, subject: str) -> None:
    """Key changes made at the server's shell are staff actions too."""
    audit.record(
        session,
        actor=_cli_actor(),
        role="operator",
        client="local",
        action=action,
        subject=subject,
        now=utcnow(),
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    startup.load_for_life()
    result = Sweeper().run(_session_factory(get_settings()), now=utcnow())
    print(
        f"swept {result.advisories} active advisories: {result.matched} citizen pairs in reach, "
        f"{result.enqueued} new alerts enqueued"
    )
    return 0


def cmd_dispatch(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    _refuse_unlisted_data_secrets(settings)
    startup.load_for_life()
    dispatcher = Dispatcher.from_settings(
        settings,
        _session_factory(settings),
        vault=settings.personal_data_vault(),
    )
    stop = threading.Event()

    def quit_on(signum: int, _frame: object) -> None:
        # Graceful: what is in hand is sent and recorded, the rest given back (close()), so a
        # container's stop does not leave alerts waiting for their lease to lapse.
        log.info("stopping: no more claims", extra={"signal": signal.Signals(signum).name})
        stop.set()
        dispatcher.quit()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, quit_on)
    try:
        if args.until_idle:
            tally = dispatcher.run_until_idle(poll_s=min(settings.dispatch_interval_s, 1.0))
        elif args.once:
            tally = dispatcher.drain()
        else:
            # Said at start (a review: a worker logged nothing until it stopped).
            log.info(
                "dispatch worker started",
                extra={
                    "notifiers": {c: n.name for c, n in dispatcher.notifiers.items()},
                    "interval_s": settings.dispatch_interval_s,
                },
            )
            tally = _work(dispatcher, interval_s=settings.dispatch_interval_s, stop=stop)
    finally:
        dispatcher.close()
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(tally.by_status.items()))
    print(f"claimed {tally.claimed} alerts: {statuses or 'nothing to send'}")
    return 0


_WORKER_PAUSE_CAP_S = 10.0


def _work(dispatcher: Dispatcher, *, interval_s: float, stop: threading.Event) -> Tally:
    """A dispatch worker beside the API processes, until stopped. A failed drain (the database
    away) is logged and tried again after a pause that doubles up to 10 s: the worker never exits
    on it, and what it had claimed is sent again once the claims lapse. Until `stop`."""
    failures = 0
    total = Tally()
    while not stop.is_set():
        try:
            total.merge(dispatcher.drain())
        except SQLAlchemyError as exc:
            failures += 1
            JOB_RUNS.labels("dispatch", "error").inc()
            log.warning(
                "dispatch failed: database unavailable",
                extra={"error": type(exc).__name__, "failures": failures},
            )
        except Exception:  # a bug: logged in full, and the other alerts still go
            failures += 1
            JOB_RUNS.labels("dispatch", "error").inc()
            log.exception("dispatch failed", extra={"failures": failures})
        else:
            failures = 0
        stop.wait(min(interval_s * 2 ** min(failures, 16), max(interval_s, _WORKER_PAUSE_CAP_S)))
    return total


def cmd_schedule(args: argparse.Namespace) -> int:
    """The scheduled jobs alone, until SIGTERM or SIGINT: no HTTP, and no dispatch (left to
    `anjeon dispatch` workers). Each singleton job runs where its lease is, so any number of
    these (and of `anjeon serve` processes with their scheduler) may run at once."""
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    _refuse_unlisted_data_secrets(settings)
    startup.load_for_life()
    factory = _session_factory(settings)
    # Its notifiers tell duty staff of help answers whose notice did not go; it drains nothing.
    dispatcher = Dispatcher.from_settings(settings, factory, vault=settings.personal_data_vault())
    scheduler = build_scheduler(
        settings,
        factory,
        load_feeds(settings.feeds_path()),
        dispatcher=dispatcher,
        dispatch=False,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    logging.getLogger("anjeon.scheduler").info(
        "scheduler started", extra={"jobs": sorted(job.id for job in scheduler.get_jobs())}
    )
    while not stop.wait(1.0):
        pass
    stop_scheduler(scheduler, factory)
    dispatcher.close()
    return 0


def cmd_reseal(args: argparse.Namespace) -> int:
    """Seal every personal value again under the current data secret (the first of
    ANJEON_DATA_KEYS), batch by batch; with --check, only count what is left. Exit 0 when
    nothing is left under an earlier secret, 1 otherwise."""
    settings = get_settings()
    vault = settings.personal_data_vault()
    factory = _session_factory(settings)
    first, *others = vault.fingerprints
    # Which secret seals: run with the service's own list, the new secret first (a review's
    # operator ran it with the list of the first restart, and sealed everything back).
    print(f"sealing under the data secret listed first: fingerprint {first}")
    if others:
        print(f"also opening under: {', '.join(others)}")
    unopened = 0
    if not args.check:
        for sealed in reseal.SEALED_COLUMNS:
            done, unreadable = 0, set[int]()
            for turn in range(_RESEAL_PASSES):
                sealed_now = _reseal_pass(factory, vault, sealed, size=args.batch, seen=unreadable)
                done += sealed_now
                if not sealed_now:
                    break  # nothing was held by a writer, or what was is held still
                if turn + 1 < _RESEAL_PASSES:
                    time.sleep(_RESEAL_PASS_PAUSE_S)
            print(f"{sealed.name}: sealed again {done}")
            if unreadable:
                shown = ", ".join(map(str, sorted(unreadable)[:20]))
                print(f"  {len(unreadable)} no listed secret opens, left as they are: {shown}")
            unopened += len(unreadable)
        with factory.begin() as session:
            _audit_cli(session, "reseal personal data", "all sealed columns")
    with factory() as session:
        left = reseal.left_to_reseal(session, vault=vault)
    for name, count in left.items():
        print(f"left under an earlier secret: {name}: {count}")
    total = sum(left.values())
    print(
        "nothing left: earlier data secrets may be dropped once the check-in links they signed "
        "have lapsed (7 days)"
        if total == 0
        else f"{total} values left under an earlier secret"
    )
    if not args.check and total == 0 and not unopened:
        # Every value opens now: what failed because a process could not open a contact goes.
        queued = _requeue_unreadable(factory)
        print(f"alerts that had failed as unreadable, queued again: {queued}")
    return 0 if total == 0 else 1


# A row a writer held during a pass is skipped (reseal_batch); the next pass, a moment later,
# takes it. One held through every pass is left, and the run says so (exit 1).
_RESEAL_PASSES = 3
_RESEAL_PASS_PAUSE_S = 1.0


def _reseal_pass(
    factory: sessionmaker[Session],
    vault: PersonalDataVault,
    sealed: reseal.SealedColumn,
    *,
    size: int,
    seen: set[int],
) -> int:
    """One pass over the column's rows: how many values it sealed again; the ids of values no
    listed secret opens are added to `seen`."""
    after, done = 0, 0
    while True:
        with factory.begin() as session:
            batch = reseal.reseal_batch(
                session, vault=vault, sealed=sealed, after_id=after, size=size
            )
        if batch.last_id is None:
            return done
        after, done = batch.last_id, done + batch.resealed
        seen.update(batch.unreadable)


_REQUEUE_SPAN = 50_000  # alert ids a transaction looks at: an id range of the primary key


def _requeue_unreadable(factory: sessionmaker[Session]) -> int:
    after, queued = 0, 0
    while True:
        with factory.begin() as session:
            now = utcnow()
            last, count = outbox.requeue_unreadable(
                session,
                after_id=after,
                span=_REQUEUE_SPAN,
                created_since=now - timedelta(days=CHECKIN_LINK_DAYS),
                now=now,
            )
            if count:
                _audit_cli(session, "queue again alerts failed as unreadable", f"{count} alerts")
        if last is None:
            return queued
        after, queued = last, queued + count


def cmd_secret_key(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists():
        print(f"{path} exists; keeping it")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(48) + "\n")
    print(f"wrote a new secret key to {path}; back it up: without it stored contacts are lost")
    return 0


def _aware_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2023-10-11T20:00:00Z")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anjeon", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API with the scheduler")
    serve.add_argument(
        "--workers", type=_workers, default=1, help="API worker processes on the port (default 1)"
    )
    serve.set_defaults(run=cmd_serve)
    commands.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(
        run=cmd_migrate
    )
    staff = commands.add_parser("staff", help="manage staff API keys")
    staff.set_defaults(run=cmd_staff)
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    create = staff_commands.add_parser("create-key", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "consul", "admin"])
    create.add_argument("--email", help="where the holder hears decisions on their proposals")
    days_help = (
        "days the key works (at most staff_key_life_days; by default that, or its last term)"
    )
    create.add_argument("--days", type=int, help=days_help)
    reissue = staff_commands.add_parser(
        "reissue", help="a new secret for a key, for another term (printed once)"
    )
    reissue.add_argument("--name", required=True)
    reissue.add_argument("--days", type=int, help=days_help)
    staff_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = staff_commands.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("--name", required=True)
    commands.add_parser("demo", help="load sample citizens").set_defaults(run=cmd_demo)
    commands.add_parser("sweep", help="run one geomatch sweep now").set_defaults(run=cmd_sweep)
    dispatch = commands.add_parser("dispatch", help="send queued alerts (a dispatch worker)")
    mode = dispatch.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="send what is due now, then exit")
    mode.add_argument(
        "--until-idle", action="store_true", help="keep going until no alert is left open"
    )
    dispatch.set_defaults(run=cmd_dispatch)
    commands.add_parser(
        "schedule", help="run the scheduled jobs without the API or dispatch (until stopped)"
    ).set_defaults(run=cmd_schedule)
    ingest = commands.add_parser(
        "ingest", help="import a feed document (CAP, GeoJSON, RSS, MOFA) from a file or URL"
    )
    ingest.add_argument("source", help="a file path or an http(s) URL")
    ingest.add_argument(
        "--format",
        choices=sorted(PARSERS),
        help="the document's format; without it, told from the content",
    )
    ingest.add_argument(
        "--allow-private", action="store_true", help="allow a URL on a loopback/private address"
    )
    ingest.add_argument(
        "--feed",
        help="the configured feed whose document this is (imported while it is down): that "
        "feed, back, takes over what this creates",
    )
    ingest.add_argument(
        "--as-of",
        type=_aware_time,
        help="judge expiry as of this RFC 3339 time (to replay an archived document)",
    )
    ingest.set_defaults(run=cmd_ingest)
    resealing = commands.add_parser(
        "reseal", help="seal personal data again under the current data secret (a key rotation)"
    )
    resealing.add_argument("--batch", type=int, default=1000, help="rows a transaction (1000)")
    resealing.add_argument("--check", action="store_true", help="only count what is left")
    resealing.set_defaults(run=cmd_reseal)
    secret = commands.add_parser("secret-key", help="create a local secret key file if missing")
    secret.add_argument("--file", default="var/secret.key")
    secret.set_defaults(run=cmd_secret_key)
    return parser


def _refuse_unknown_environment() -> None:
    """Stop on an ANJEON_* variable no setting reads: a typo would otherwise run the service
    as if it were not set."""
    try:
        plugins = (getattr(factory, "settings_model", None) for factory in available().values())
        prefixes = [model.model_config.get("env_prefix", "") for model in plugins if model]
    except NotifierConfigError:
        # A plugin that does not load stops what sends (serve, dispatch, schedule) by itself;
        # it must not stop a migration or a staff key's revocation too (a review). Its
        # settings are taken to follow the convention, ANJEON_<NAME>_.
        points = entry_points(group=ENTRY_POINT_GROUP)
        prefixes = [f"ANJEON_{point.name.upper()}_" for point in points]
    if unknown := unknown_environment(os.environ, plugin_prefixes=prefixes):
        raise ValueError(
            "unknown settings in the environment: "
            + ", ".join(unknown)
            + " (docs/configuration.md lists them all)"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `kill -USR1 <pid>`: every thread's stack on stderr, for a process that seems stuck (not
    # when stderr is no file: main() called in a test that captures it).
    with contextlib.suppress(AttributeError, OSError, ValueError):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr.fileno(), all_threads=True)
    # What the service writes is its own alone: the SQLite database and its log hold places,
    # answers and audit reasons in clear, and were made readable by every user (a review).
    # Put back after: main() is called in-process by tests too.
    umask = os.umask(0o077)
    try:
        _refuse_unknown_environment()
        return args.run(args)
    except (ValueError, RuntimeError) as exc:  # settings refused to load
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        os.umask(umask)


if __name__ == "__main__":
    sys.exit(main())
