"""Keeping a notifier within its sender's rate: evenly spaced send slots shared by threads."""

import threading
import time


class Pacer:
    """Hands out send slots at most `per_second` apart (no bursts: a provider counts per
    second, and a burst is what gets an account throttled)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """No slot for the next `seconds` (a provider's Retry-After)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)
