"""The scheduled jobs. Each job body is a domain service function run in its own transaction.

APScheduler 3 does not coordinate processes (every worker runs every job): each periodic job
runs only in the process holding its lease row, and would be harmless twice anyway. The
dispatch job runs in every process that has it (`anjeon serve`; `anjeon schedule` leaves it to
`anjeon dispatch` workers): its claims are exclusive, so workers share the queue. Each run
that commits logs its holder and when it held the job (`started` once the lease was taken,
`ended` once the run committed), so runs of one job can be shown never to overlap."""

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from service import lease
from service.advisories.approval import Decided, lapse_ended_proposals
from service.advisories.decisions import tell_proposer
from service.advisories.feeds.config import Feed
from service.advisories.feeds.poll import poll_feed
from service.advisories.service import expire_due
from service.checkin import duty
from service.checkin.answers import forget_old_inbound, forget_old_words, hash_inbound_ids
from service.checkin.escalation import escalate
from service.checkin.retention import forget_ended_ledgers
from service.citizens.retention import purge_ended_stays
from service.citizens.service import purge_unverified
from service.config import Settings
from service.db import bound_idle, flush_write_ahead_log, utcnow
from service.dispatch.dispatcher import Dispatcher
from service.dispatch.notifiers.base import Notifier
from service.geomatch.service import Sweeper
from service.metrics import JOB_RUNS
from service.rate_limits import RateLimits

log = logging.getLogger("anjeon.scheduler")


@dataclass(frozen=True)
class Job:
    id: str
    every_s: int
    body: Callable[[Session, Settings], object]
    # What follows the run's commit, given what the body returned (a notice of what the run
    # decided must not go before the decision is kept).
    then: Callable[[object], None] | None = None


def _purge_stays(session: Session, settings: Settings) -> int:
    return purge_ended_stays(session, now=utcnow(), retention_days=settings.stay_retention_days)


@dataclass(frozen=True)
class Expired:
    """What the expiry job did: advisories expired, and proposals that lapsed (turned down,
    their proposers to be told)."""

    advisories: int
    lapsed: int
    decided: list[Decided] = field(default_factory=list, repr=False)


def _expire_advisories(session: Session, settings: Settings) -> Expired:
    now = utcnow()
    decided = lapse_ended_proposals(session, now=now)
    return Expired(expire_due(session, now=now), len(decided), decided)


def tell_lapsed(
    factory: sessionmaker[Session], settings: Settings, notifiers: Mapping[str, Notifier]
) -> Callable[[object], None]:
    """After an expiry run commits: each lapsed proposal's proposer hears it, as for a consul's
    decision (their key's e-mail, else the staff webhook)."""

    def tell(result: object) -> None:
        assert isinstance(result, Expired)
        for decided in result.decided:
            try:
                tell_proposer(factory, decided=decided, notifiers=notifiers, settings=settings)
            except Exception:  # one that fails holds up none of the others
                log.exception(
                    "lapse notice not sent", extra={"advisory": decided.advisory_public_id}
                )

    return tell


def _purge_unverified(session: Session, settings: Settings) -> int:
    return purge_unverified(session, now=utcnow(), ttl_h=settings.unverified_ttl_h)


def _escalate_checkins(session: Session, settings: Settings) -> int:
    return escalate(
        session,
        after=timedelta(minutes=settings.checkin_escalate_after_m),
        rounds=settings.checkin_rounds,
        now=utcnow(),
    )


def _forget_inbound(session: Session, settings: Settings) -> int:
    # What is kept for a while only: inbound SMS ids, and citizens' own words.
    now = utcnow()
    forgotten = forget_old_inbound(session, now=now)
    try:  # on its own: a failure here must not hold back the deletions
        with session.begin_nested():
            hash_inbound_ids(session, settings.personal_data_vault())
    except Exception:
        log.exception("inbound SMS ids kept whole were not hashed")
    return forgotten + forget_old_words(session, now=now, kept_days=settings.words_retention_days)


def _forget_ended_ledgers(session: Session, settings: Settings) -> int:
    if not settings.ledger_retention_days:  # 0: kept for ever
        return 0
    return forget_ended_ledgers(session, now=utcnow(), kept_days=settings.ledger_retention_days)


def jobs(
    settings: Settings,
    *,
    after_expiry: Callable[[object], None] | None = None,
    after_purge: Callable[[object], None] | None = None,
) -> list[Job]:
    """The jobs run under a lease; `after_expiry` follows each committed expiry run, and
    `after_purge` each purge of unverified and orphaned records."""
    every = settings.job_interval_s
    return [
        Job("expire-advisories", every or 60, _expire_advisories, then=after_expiry),
        Job("checkin-escalate", every or 60, _escalate_checkins),
        Job("forget-inbound-sms", every or 6 * 3600, _forget_inbound),
        Job("purge-ended-stays", every or 6 * 3600, _purge_stays),
        Job("forget-ended-ledgers", every or 3600, _forget_ended_ledgers),
        Job("purge-unverified", every or 3600, _purge_unverified, then=after_purge),
    ]


class LeaseLost(Exception):
    """The job's lease went to another process while the job ran: its work is rolled back."""


def _held(job: str, *, holder: str, started: datetime, **fields: object) -> None:
    """A committed run: who held the job, from when (its lease taken) until now (committed)."""
    log.info(
        "job done",
        extra={
            "job": job,
            "holder": holder,
            "started": started.isoformat(),
            "ended": utcnow().isoformat(),
            **fields,
        },
    )


def run_job(
    job: Job, factory: sessionmaker[Session], settings: Settings, *, holder: str = lease.PROCESS_ID
) -> None:
    """One run in one transaction, in the one process holding the job's lease; a failure is
    logged and counted, and the next run tries again. The lease is taken in a transaction of
    its own (a run never holds the lease row locked, so a paused holder cannot block the next
    one), and checked again before the run commits: a run whose lease was taken over meanwhile
    is rolled back, so two holders never both commit a run."""
    ttl = timedelta(seconds=job.every_s * 3)
    try:
        with factory.begin() as session:
            # Bounded too: a holder paused inside it keeps the lease row locked, and the next
            # holder's take would wait for as long (seen with SIGSTOP).
            lease.fence(session, ttl=ttl)
            if not lease.acquire(session, name=job.id, now=utcnow(), ttl=ttl, holder=holder):
                JOB_RUNS.labels(job.id, "not-leader").inc()
                return
        started = utcnow()
        with factory.begin() as session:
            lease.fence(session, ttl=ttl)
            result = job.body(session, settings)
            if not lease.still_held(session, name=job.id, holder=holder):
                raise LeaseLost(job.id)
    except LeaseLost:
        JOB_RUNS.labels(job.id, "fenced").inc()
        log.warning("job rolled back: its lease went to another process", extra={"job": job.id})
        return
    except Exception:
        JOB_RUNS.labels(job.id, "error").inc()
        log.exception("job failed", extra={"job": job.id})
        return
    JOB_RUNS.labels(job.id, "ok").inc()
    _held(job.id, holder=holder, started=started, result=result)
    if job.then is not None:
        try:
            job.then(result)
        except Exception:  # the run stands; only what follows it is lost
            log.exception("what follows the job failed", extra={"job": job.id})


def run_feed_poll(feed: Feed, factory: sessionmaker[Session], settings: Settings) -> None:
    try:
        with factory.begin() as session:
            ttl = timedelta(seconds=feed.interval_s * 3)
            lease.fence(session, ttl=ttl)
            if not lease.acquire(session, name=f"feed:{feed.name}", now=utcnow(), ttl=ttl):
                JOB_RUNS.labels(f"feed:{feed.name}", "not-leader").inc()
                return
        outcome = poll_feed(
            factory,
            feed,
            now=utcnow(),
            timeout_s=settings.feed_timeout_s,
            max_bytes=settings.feed_max_bytes,
            max_vertices=settings.max_area_vertices,
            approval=settings.approval_policy(feed.approval),  # type: ignore[arg-type]
            min_reach=settings.feed_approval_min_reach,
        )
    except Exception:
        JOB_RUNS.labels(f"feed:{feed.name}", "error").inc()
        log.exception("feed poll crashed", extra={"feed": feed.name})
        return
    JOB_RUNS.labels(f"feed:{feed.name}", outcome).inc()


def fenced_by_lease(
    factory: sessionmaker[Session], *, name: str, ttl: timedelta
) -> sessionmaker[Session]:
    """Sessions of `factory` (its listeners included) fenced by the lease `name`, for a job
    body that opens its own transaction (the sweep): each transaction is bounded as
    lease.fence bounds run_job's, and refuses to commit once the lease is another's."""
    made: sessionmaker[Session] = sessionmaker(class_=factory.class_, **factory.kw)

    def bound(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        # lease.fence, on the connection: the session cannot execute while it begins.
        bound_idle(connection, seconds=ttl.total_seconds())

    def check(session: Session) -> None:
        if not lease.still_held(session, name=name):
            raise LeaseLost(name)
        # Held (its row locked till this commit): renewed, so a job that commits as it goes
        # (the sweep, a shard at a time) keeps its lease for as long as it works.
        lease.acquire(session, name=name, now=utcnow(), ttl=ttl)

    event.listen(made, "after_begin", bound)
    event.listen(made, "before_commit", check)
    return made


def run_sweep(
    sweeper: Sweeper,
    factory: sessionmaker[Session],
    fenced: sessionmaker[Session],
    settings: Settings,
) -> None:
    """The geomatch sweep, in the one process that holds the lease; it runs on `fenced`
    (fenced_by_lease): each of its commits renews the lease, and a transaction that outlived
    it is rolled back."""
    now = utcnow()
    ttl = timedelta(seconds=settings.sweep_interval_s * 3)
    try:
        with factory.begin() as session:
            lease.fence(session, ttl=ttl)
            leader = lease.acquire(session, name="geomatch-sweep", now=now, ttl=ttl)
        if not leader:
            JOB_RUNS.labels("geomatch-sweep", "not-leader").inc()
            return
        started = utcnow()
        result = sweeper.run(fenced, now=now)
    except LeaseLost:
        JOB_RUNS.labels("geomatch-sweep", "fenced").inc()
        log.warning("sweep rolled back: its lease went to another process")
        return
    except Exception:
        JOB_RUNS.labels("geomatch-sweep", "error").inc()
        log.exception("sweep failed")
        return
    JOB_RUNS.labels("geomatch-sweep", "ok").inc()
    _held(
        "geomatch-sweep",
        holder=lease.PROCESS_ID,
        started=started,
        matched=result.matched,
        enqueued=result.enqueued,
        advisories=result.advisories,
        asked_on_arrival=result.asked_on_arrival,
    )


def run_duty_notices(
    dispatcher: Dispatcher,
    factory: sessionmaker[Session],
    settings: Settings,
    limits: RateLimits | None = None,
) -> None:
    """Help answers (and help messages no check-in asked for) whose duty notice did not go
    when recorded (a crash, a relay down)."""
    now = utcnow()
    try:
        with factory.begin() as session:
            ttl = timedelta(seconds=3 * (settings.job_interval_s or 60))
            lease.fence(session, ttl=ttl)
            if not lease.acquire(session, name="duty-notices", now=now, ttl=ttl):
                JOB_RUNS.labels("duty-notices", "not-leader").inc()
                return
            waiting = duty.waiting(session, answered_before=now - timedelta(minutes=1), now=now)
            messages = duty.waiting_help_messages(
                session, received_before=now - timedelta(minutes=1), now=now
            )
        told = duty.tell_duty(
            factory,
            vault=dispatcher.vault,
            notifiers=dispatcher.notifiers,
            settings=settings,
            checkin_ids=waiting,
            help_message_ids=messages,
            now=now,
            limits=limits,
            still_ours=partial(_still_held, factory, "duty-notices"),
        )
    except Exception:
        JOB_RUNS.labels("duty-notices", "error").inc()
        log.exception("duty notices failed")
        return
    JOB_RUNS.labels("duty-notices", "ok").inc()
    if waiting or messages:
        # "sent late" only when one went: with no duty contact set, or every notifier
        # refusing, none did (tell_duty logs why), and the line said "sent" all the same.
        log.warning(
            "duty notices sent late" if told else "duty notices waiting, none sent",
            extra={"waiting": len(waiting) + len(messages), "told": told},
        )


def _still_held(factory: sessionmaker[Session], name: str) -> bool:
    """Whether this process still holds the lease `name`, asked in a transaction of its own
    (a job that sends as it goes: nothing of it waits for a commit to be fenced)."""
    with factory.begin() as session:
        return lease.still_held(session, name=name)


def run_dispatch(dispatcher: Dispatcher) -> None:
    """Drain the alert ledger; runs in every process (claims are exclusive)."""
    try:
        tally = dispatcher.drain()
    except Exception:
        JOB_RUNS.labels("dispatch", "error").inc()
        log.exception("dispatch failed")
        return
    JOB_RUNS.labels("dispatch", "ok").inc()
    if tally.claimed:
        log.info(
            "dispatch done",
            extra={"claimed": tally.claimed, "by_status": tally.by_status},
        )


class DispatchRuns:
    """The dispatch job's runs in one process: one drains at a time, and a run asked for
    meanwhile (a wake, the interval) makes the one draining go round once more, instead of
    being skipped. With APScheduler's max_instances=1 alone, a wake landing as a drain ended
    was skipped, and its level-4 alert waited a whole interval (a review: 5.05 s after its
    commit, against 0.15 s when the job was idle)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._lock = threading.Lock()
        self._running = False
        self._again = False

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                run_dispatch(self.dispatcher)
                with self._lock:
                    if not self._again:
                        self._running = False
                        return
                    self._again = False
        except BaseException:
            with self._lock:
                self._running = self._again = False
            raise


def wake_dispatch(scheduler: BackgroundScheduler, dispatcher: Dispatcher) -> None:
    """Alerts were committed: run the dispatch job now (or once more, if it is running)."""
    dispatcher.wake()
    with contextlib.suppress(JobLookupError):  # shutting down
        scheduler.modify_job("dispatch", next_run_time=utcnow())


def stop_scheduler(scheduler: BackgroundScheduler, factory: sessionmaker[Session]) -> None:
    """Stop when its running jobs have finished, then hand their leases back."""
    scheduler.shutdown(wait=True)
    try:
        with factory.begin() as session:
            released = lease.release_held(session)
    except SQLAlchemyError as exc:  # they lapse by themselves
        log.warning("leases not released", extra={"error": type(exc).__name__})
        return
    if released:
        log.info("leases released", extra={"jobs": sorted(released)})


def build_scheduler(
    settings: Settings,
    factory: sessionmaker[Session],
    feeds: list[Feed] | None = None,
    *,
    dispatcher: Dispatcher | None = None,
    dispatch: bool = True,
    limits: RateLimits | None = None,
) -> BackgroundScheduler:
    """The jobs; with a dispatcher, the duty notices (through its notifiers) and, unless
    `dispatch` is False (a scheduler-only process), the dispatch job draining the ledger.
    `limits`: the process's (the duty notices' hour is counted there); else one of its own."""
    scheduler = BackgroundScheduler(timezone="UTC")
    if dispatcher is not None and dispatch:
        scheduler.add_job(
            DispatchRuns(dispatcher),
            "interval",
            seconds=settings.dispatch_interval_s,
            id="dispatch",
            name="dispatch",
            replace_existing=True,
            # Two: a run asked for while one drains returns at once, leaving it to go round
            # again (DispatchRuns); a second slot lets it in even as the first one ends.
            max_instances=2,
            coalesce=True,
            misfire_grace_time=60,
            next_run_time=utcnow(),
        )
    if dispatcher is not None:
        scheduler.add_job(
            run_duty_notices,
            "interval",
            seconds=settings.job_interval_s or 60,
            args=(dispatcher, factory, settings, limits or RateLimits(settings)),
            id="duty-notices",
            name="duty-notices",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=60,
        )
    scheduler.add_job(
        run_sweep,
        "interval",
        seconds=settings.sweep_interval_s,
        args=(
            Sweeper(),
            factory,
            fenced_by_lease(
                factory,
                name="geomatch-sweep",
                ttl=timedelta(seconds=settings.sweep_interval_s * 3),
            ),
            settings,
        ),
        id="geomatch-sweep",
        name="geomatch-sweep",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=settings.sweep_interval_s,
        next_run_time=utcnow(),
    )
    for feed in feeds or []:
        if feed.enabled:
            scheduler.add_job(
                run_feed_poll,
                "interval",
                seconds=feed.interval_s,
                args=(feed, factory, settings),
                id=f"feed:{feed.name}",
                name=f"feed:{feed.name}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=feed.interval_s,
                next_run_time=utcnow(),
            )
    notifiers = dispatcher.notifiers if dispatcher is not None else None
    after_expiry = tell_lapsed(factory, settings, notifiers) if notifiers else None
    # An erasure's old pages leave SQLite's write-ahead log once the purge has committed.
    engine = factory.kw["bind"]
    after_purge = (lambda _result: flush_write_ahead_log(engine)) if engine is not None else None
    for job in jobs(settings, after_expiry=after_expiry, after_purge=after_purge):
        scheduler.add_job(
            run_job,
            "interval",
            seconds=job.every_s,
            args=(job, factory, settings),
            id=job.id,
            name=job.id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
            next_run_time=utcnow(),
        )
    return scheduler
