"""create_app(): the API with its routers, error handlers and the scheduler in its lifespan."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from service import startup
from service.advisories.feeds.config import load_feeds
from service.advisories.feeds.router import router as feeds_router
from service.advisories.reach_counts import ReachCounts
from service.advisories.router import router as advisories_router
from service.advisories.sending_router import router as sending_router
from service.api_headers import ApiNoStoreMiddleware
from service.audit.router import router as audit_router
from service.auth import request_transaction
from service.body_limit import BodyLimitMiddleware
from service.checkin.router import router as checkin_router
from service.citizens.messages import duty_told_of_spent_budget
from service.citizens.router import router as citizens_router
from service.citizens.service import Registry
from service.citizens.staff_router import router as registry_router
from service.config import Settings, get_settings
from service.db import READ_ONLY, late_write_engine, make_engine, make_session_factory
from service.dispatch.dispatcher import Dispatcher
from service.dispatch.router import router as alerts_router
from service.forms import PAGE_FORM_BYTES
from service.geo.geocoding import Geocoder, make_geocoder
from service.head_requests import HeadAsGetMiddleware
from service.ledger.wake import wake_after_commit
from service.migrate import head_revision
from service.openapi import install_api_docs
from service.operations.loop_watch import watch_event_loop
from service.operations.request_deadline import RequestDeadlineMiddleware
from service.operations.request_log import RequestLogMiddleware
from service.operations.router import router as operations_router
from service.problems import install_problem_handlers
from service.rate_limits import RateLimits
from service.scheduler import build_scheduler, stop_scheduler, wake_dispatch
from service.slash_redirect import install_slash_redirect
from service.staff import service as staff_service
from service.staff.models import Role
from service.staff.router import router as staff_router
from service.web.geo_router import router as geo_router
from service.web.router import mount_assets
from service.web.router import router as web_router

log = logging.getLogger("anjeon.app")


# Twilio's status callbacks and inbound SMS are forms of a few kilobytes (an SMS body is at
# most 1,600 characters): more is not Twilio, and is refused before it is parsed.
WEBHOOK_BODY_BYTES = 65_536


def _may_issue(app: FastAPI, token: str) -> bool:
    """A live key of a consul or an admin: only those may send the larger advisory bodies (a
    viewer's would be parsed only to be refused). A read-only transaction of its own (on
    SQLite no write lock); a database that does not answer admits none (the request would
    fail at its own look-up anyway)."""
    try:
        with app.state.session_factory() as session:
            session.connection(execution_options={READ_ONLY: True})
            key = staff_service.authenticate(session, key=token)
            return key is not None and Role(key.role).rank >= Role.consul.rank
    except SQLAlchemyError:
        log.warning("staff key check for a large body failed", exc_info=True)
        return False


def create_app(settings: Settings | None = None, *, geocoder: Geocoder | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    factory = make_session_factory(engine)
    late_engine = late_write_engine(settings.database_url)  # no connection until one is late

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(startup.load_for_life)
        scheduler = (
            build_scheduler(
                settings,
                factory,
                app.state.feeds,
                dispatcher=dispatcher,
                limits=app.state.rate_limits,
            )
            if settings.scheduler_enabled
            else None
        )
        if scheduler:
            wake_after_commit(factory, lambda: wake_dispatch(scheduler, dispatcher))
            scheduler.start()
        for channel, notifier in dispatcher.notifiers.items():
            log.info("notifier", extra={"channel": channel, "notifier": notifier.describe()})
        log.info("enforced", extra={"settings": ", ".join(settings.enforced())})
        try:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(watch_event_loop)
                yield
                watchers.cancel_scope.cancel()
        finally:
            # Claim nothing more first: the running drain ends with the batch in hand, and the
            # scheduler's wait for it is that batch's, not the whole backlog's (a review: 56 s
            # for 30 SMS at 1 a second, past an orchestrator's grace period).
            dispatcher.quit()
            if scheduler:
                stop_scheduler(scheduler, factory)
            dispatcher.close()
            engine.dispose()
            late_engine.dispose()

    # /docs and /redoc come from install_api_docs, with assets served here, not from a CDN.
    # In production the description is for staff only (install_api_docs serves it with a key).
    production = settings.environment == "production"
    app = FastAPI(
        title="Anjeon",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None if production else "/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.late_engine = late_engine
    app.state.session_factory = factory
    app.state.request_transaction = request_transaction
    app.state.schema_head = head_revision(settings.database_url)
    app.state.feeds = load_feeds(settings.feeds_path())  # a broken feeds.toml stops start-up
    # Shared by every process when the storage is Redis (registrations, codes, resends, the
    # geocoder's one request a second).
    app.state.rate_limits = RateLimits(settings)
    app.state.reach_counts = ReachCounts(
        at_once=settings.reach_previews_at_once, per_key=settings.reach_previews_per_key
    )
    app.state.registry = Registry(
        vault=settings.personal_data_vault(),
        geocoder=geocoder
        or make_geocoder(
            settings.geocoder,
            user_agent=settings.geocoder_user_agent,
            timeout_s=settings.geocoder_timeout_s,
            turn=app.state.rate_limits.geocoder_turn,
            url=settings.geocoder_url,
        ),
        phone_region=settings.phone_default_region,
        max_stays=settings.max_stays,
    )
    # An unknown or broken notifier stops start-up here.
    dispatcher = Dispatcher.from_settings(settings, factory, vault=app.state.registry.vault)
    app.state.dispatcher = dispatcher
    app.state.rate_limits.when_budget_spent = duty_told_of_spent_budget(
        dispatcher.notifiers, settings
    )
    app.state.renderer = dispatcher.renderer
    install_problem_handlers(app)
    for router in (
        operations_router,
        citizens_router,
        registry_router,
        staff_router,
        audit_router,
        checkin_router,
        sending_router,
        advisories_router,
        feeds_router,
        alerts_router,
        geo_router,
        web_router,
    ):
        app.include_router(router)
    mount_assets(app)
    install_api_docs(app)
    install_slash_redirect(app)
    app.add_middleware(HeadAsGetMiddleware)  # innermost: the access log still says HEAD
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        staff_larger={"/v1/advisories": settings.max_advisory_body_bytes},
        smaller={"/v1/webhooks/": WEBHOOK_BODY_BYTES, "/c/": PAGE_FORM_BYTES},
        may_send_larger=partial(_may_issue, app),
    )
    app.add_middleware(ApiNoStoreMiddleware)  # outside the body limit: its 413 gets it too
    # Inside the access log, so that a late request's 503 is logged and counted as such.
    app.add_middleware(RequestDeadlineMiddleware, timeout_s=settings.request_timeout_s)
    app.add_middleware(RequestLogMiddleware)
    return app
