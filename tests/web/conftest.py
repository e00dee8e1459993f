"""Browser tests: the real service on a loopback port (its own migrated database, scheduler and
dispatcher running, notifiers pointed at the fake Twilio and the SMTP sink), driven by Debian's
headless Chromium through Playwright. Any JavaScript error in the browser fails the test."""

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from service.app import create_app
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.staff import service as staff_service
from tests.conftest import make_settings
from tests.dispatch.conftest import notifier_settings
from tests.dispatch.fake_twilio import FakeTwilio
from tests.dispatch.seed import scratch_database
from tests.dispatch.smtp_sink import SmtpSink
from tests.loopback_server import listening_socket, uvicorn_in_thread

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium (.ci/run installs it). In CI its absence fails the run; on a developer
    machine without it the browser tests say why they are skipped."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import expect, sync_playwright

    # Playwright's 5 s for each expect(...) was missed twice in one CI run: four legs and
    # Chromium on two cores. A check that holds still passes as soon as it holds.
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@dataclass
class Page:
    """A browser tab and what went wrong in it."""

    tab: object
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        """A screenshot under var/screenshots/ (referenced from the docs)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.tab.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path


@pytest.fixture
def new_page(browser: object) -> Iterator[Callable[..., Page]]:
    """new_page(width=1280) -> a fresh tab (its own storage); fails the test on any JS error."""
    opened: list[tuple[object, Page]] = []

    def make(width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
        tab = context.new_page()
        page = Page(tab)
        tab.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: page.errors.append(str(e)))
        opened.append((context, page))
        return page

    yield make
    errors = [e for _, page in opened for e in page.errors]
    for context, _ in opened:
        context.close()  # type: ignore[attr-defined]
    assert errors == [], f"JavaScript errors in the browser: {errors}"


@dataclass
class LiveService:
    base: str
    settings: Settings
    database_url: str
    twilio: FakeTwilio
    smtp: SmtpSink
    # What a test asks the service itself: a minute, not httpx's 5 s. The service shares two cores
    # with Chromium, PostgreSQL and the test; speed is the benchmarks' business (a POST of an
    # advisory once took over 5 s in CI).
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def staff_key(self, role: str, name: str, days: int | None = None) -> str:
        engine = make_engine(self.database_url)
        try:
            with make_session_factory(engine).begin() as session:
                return staff_service.create_key(session, name=name, role=role, days=days).key
        finally:
            engine.dispose()

    def session(self) -> Session:
        return make_session_factory(make_engine(self.database_url))()


@pytest.fixture
def live(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    twilio: FakeTwilio,
    smtp: SmtpSink,
) -> Iterator[LiveService]:
    """The whole service on 127.0.0.1: API, pages, scheduler and dispatcher, verification and
    approval required, as a real deployment runs; `@pytest.mark.live_settings(...)` changes
    settings."""
    changed = request.node.get_closest_marker("live_settings")
    held = listening_socket()
    port = held.getsockname()[1]
    with scratch_database(database_url, tmp_path, "web") as url:
        settings = make_settings(
            url,
            **{
                **notifier_settings(twilio, smtp),
                "public_base_url": f"http://127.0.0.1:{port}",
            },
            scheduler_enabled=True,
            verification="required",
            approval="required",
            dispatch_interval_s=0.2,
            sweep_interval_s=3600,
            **(changed.kwargs if changed else {}),
        )
        with uvicorn_in_thread(create_app(settings), held):
            service = LiveService(f"http://127.0.0.1:{port}", settings, url, twilio, smtp)
            try:
                yield service
            finally:
                service.http.close()
