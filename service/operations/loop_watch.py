"""Notices when the event loop is held up: the requests it serves wait while it is (a call that
blocks it, a process starved of CPU). Without it, a late loop shows only as slow answers and
dropped keep-alive connections, and nothing says why."""

import logging
import time

import anyio

from service.metrics import EVENT_LOOP_LATE

log = logging.getLogger("anjeon.operations")

# Short looks: a hold is seen from LATE_S + LOOK_EVERY_S at most (with half-second looks, a
# review held the loop 1.4 s just after one began, and nothing was seen).
LOOK_EVERY_S = 0.1
LATE_S = 1.0  # a scheduler's jitter on a busy machine is far less


async def watch_event_loop(*, every_s: float = LOOK_EVERY_S, late_s: float = LATE_S) -> None:
    """Sleeps `every_s` at a time, for ever; a wake-up `late_s` or more late is logged. Never
    raises: it runs beside the app's lifespan, and an error here would end the lifespan (the
    dispatcher and scheduler stopped) while the server went on answering."""
    while True:
        asked = time.monotonic()
        await anyio.sleep(every_s)
        late = time.monotonic() - asked - every_s
        if late < late_s:
            continue
        try:
            EVENT_LOOP_LATE.inc(late)
            log.warning("event loop held up", extra={"late_s": round(late, 2)})
        except Exception:  # noqa: S110 - a failed log or count must not end the watch
            pass
