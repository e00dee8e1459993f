"""The event loop's watch: a loop held up is logged and counted, a punctual one is not."""

import logging
import threading
import time

import anyio
from prometheus_client import REGISTRY

from service.operations.loop_watch import watch_event_loop

LATE_TOTAL = "anjeon_event_loop_late_seconds_total"


def _watched(block_s: float, *, late_s: float) -> float:
    """Runs the watch for a while, holding the loop `block_s` in the middle; the counter's rise."""
    before = REGISTRY.get_sample_value(LATE_TOTAL) or 0.0

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: watch_event_loop(every_s=0.05, late_s=late_s))
            await anyio.sleep(0.12)
            time.sleep(block_s)  # holds the loop, as a blocking call in a coroutine would
            await anyio.sleep(0.12)
            group.cancel_scope.cancel()

    # In a thread of its own: an earlier test of the leg (a browser's sync API) may have left a
    # loop running in this one, and anyio.run refuses to start a second there (seen in CI).
    ran = threading.Thread(target=anyio.run, args=(main,))
    ran.start()
    ran.join(timeout=30)
    assert not ran.is_alive()
    return (REGISTRY.get_sample_value(LATE_TOTAL) or 0.0) - before


def test_a_loop_held_up_is_logged_with_how_late_and_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="anjeon.operations"):
        rise = _watched(1.0, late_s=0.4)
    held = [r for r in caplog.records if r.getMessage() == "event loop held up"]
    assert len(held) == 1, caplog.records
    assert 0.85 <= held[0].late_s <= rise + 0.01  # 1 s held, less the 0.05 s it slept
    assert rise >= 0.85


def test_a_punctual_loop_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="anjeon.operations"):
        rise = _watched(0.0, late_s=1.0)  # a loaded CI machine's jitter is well under 1 s
    assert not [r for r in caplog.records if r.getMessage() == "event loop held up"]
    assert rise == 0.0
