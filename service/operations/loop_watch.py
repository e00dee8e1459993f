"""Notices when the event loop is held up: every request waits while it is (a call that blocks
it, a process starved of CPU). Without it, a late loop shows only as slow answers and dropped
keep-alive connections, and nothing says why."""

import logging
import time

import anyio

from service.metrics import EVENT_LOOP_LATE

log = logging.getLogger("anjeon.http")

LOOK_EVERY_S = 0.5
LATE_S = 1.0  # a scheduler's jitter on a busy machine is far less


async def watch_event_loop(*, every_s: float = LOOK_EVERY_S, late_s: float = LATE_S) -> None:
    """Sleeps `every_s` at a time, for ever; a wake-up `late_s` or more late is logged."""
    while True:
        asked = time.monotonic()
        await anyio.sleep(every_s)
        late = time.monotonic() - asked - every_s
        if late >= late_s:
            EVENT_LOOP_LATE.inc(late)
            log.warning("event loop held up", extra={"late_s": round(late, 2)})
