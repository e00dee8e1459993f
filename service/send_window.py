"""The last moment a send may start: the dispatcher's claim on the alert, less a margin. The
dispatcher checks it before calling a notifier, but a process paused in between (a VM frozen,
SIGSTOP) would, on waking, send what another dispatcher took over and already resent: the
provider takes no fencing token. So a notifier checks it again as late as it can, as the
first byte leaves (Twilio: in the connection's send, provider_wire.py; SMTP: before DATA),
which leaves microseconds rather than the SDK's whole request-building in between."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_closes_at: ContextVar[Callable[[], float] | None] = ContextVar("send_window", default=None)


class SendWindowClosed(Exception):
    """Nothing went: the claim may no longer be ours. Raise it only before the first byte of
    the message leaves (a plugin too): the dispatcher records the alert as not tried, fenced by
    its claim, and sends it again with no look-up first."""


@contextmanager
def send_window(closes_at: Callable[[], float]) -> Iterator[None]:
    """Sends started in this block must start before `closes_at()` (time.monotonic()), read at
    each check: the heartbeat may renew the lease while a slow relay is being connected to."""
    token = _closes_at.set(closes_at)
    try:
        yield
    finally:
        _closes_at.reset(token)


def check_send_window() -> None:
    """Raises SendWindowClosed once the current window has closed (no window: always open)."""
    closes_at = _closes_at.get()
    if closes_at is None:
        return
    late = time.monotonic() - closes_at()
    if late >= 0:
        raise SendWindowClosed(f"the claim's send window closed {late:.3f} s ago")
