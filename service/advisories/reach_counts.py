"""How many reach previews a process counts at once: each counts the whole registry in the
area (seconds at 200,000 citizens in a country), and a probe's one consul key ran 40 at once,
made the public endpoints ten times slower and the process grow to 2 GB. A staff key has at
most `per_key` counts under way in a process, the process `at_once`; a preview past either is
refused at once (no thread waits for a turn), and the console asks again after a moment."""

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ServiceUnavailable, TooManyRequests

RETRY_AFTER_S = 1


# A slug of their own: the console asks again after these refusals only, not after a preview
# that ran out of time (a review: those were asked 8 times, 15 s each).
class KeysReachPreviewsBusy(TooManyRequests):
    slug = "reach-previews-busy"


class ReachPreviewsBusy(ServiceUnavailable):
    slug = "reach-previews-busy"


class ReachCounts:
    def __init__(self, *, at_once: int, per_key: int) -> None:
        self._at_once = at_once
        self._per_key = per_key
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()

    @contextmanager
    def turn(self, key_name: str) -> Iterator[None]:
        """A turn to count a reach for the staff key `key_name`: 429 while the key has its
        counts under way, 503 while the process has."""
        with self._lock:
            if self._running[key_name] >= self._per_key:
                raise KeysReachPreviewsBusy(
                    f"{self._per_key} reach previews of this key are being counted; "
                    "ask again when one ends",
                    retry_after_s=RETRY_AFTER_S,
                    rule="reach_previews",
                )
            if self._running.total() >= self._at_once:
                raise ReachPreviewsBusy(
                    "other reach previews are being counted; ask again in a moment",
                    retry_after_s=RETRY_AFTER_S,
                )
            self._running[key_name] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[key_name] -= 1
                if not self._running[key_name]:
                    del self._running[key_name]
