"""A sender's rate, shared by every dispatcher process, counted in message segments.

Twilio meters a sender (a From number, short code or messaging service) in segments per second:
a 3-segment SMS spends 3. The rate belongs to the sender, not to each of our processes, so it is
counted where they all count: the rate-limit storage (ANJEON_RATE_LIMIT_STORAGE, Redis when
several processes run). Time is cut into one-second windows pinned to the clock; a process
reserves its next sends (a quarter second of them) with one INCRBY on the window's counter, as
the `limits` library's fixed window does, and keeps what the counter shows was still free.
Within what it got, it spaces its sends evenly at the sender's rate. Counts are kept in
thousandths of a segment, so 0.5/s and a 3-segment SMS at 1/s are whole numbers.

When the storage is not shared (memory://) or does not answer, each process takes the rate
divided by the dispatchers alive (their heartbeat rows): never above the sender's rate once the
heartbeats agree, at the cost of shares left unused by a process with nothing to send.

A full provider queue (Twilio 21611, or 30001 reported later) holds the sender: its windows are
filled for `hold_s`, then less and less for `ramp_s`, so every process sharing the storage
stops, then resumes gradually. The first report of a hold writes it; later ones find it."""

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string

log = logging.getLogger("anjeon.dispatch")
UNIT = 1000  # counts are in thousandths of a segment
_BLOCK_S = 0.25  # what one reservation asks for: a few round trips a second per process
_HORIZON_S = 60.0  # no reservation further ahead: a send that far off waits for a later batch
_RETRY_SHARED_S = 5.0  # after a storage error, the local share is used this long
# A hung Redis must not stall the sends for long: a reservation is a sub-millisecond call.
_STORAGE_TIMEOUT_S = 0.5


def open_storage(uri: str) -> tuple[Storage, bool]:
    """The storage named by ANJEON_RATE_LIMIT_STORAGE, and whether other processes share it."""
    if not uri.startswith("redis"):
        return MemoryStorage(), False
    storage = storage_from_string(
        uri,
        wrap_exceptions=True,
        key_prefix="anjeon",
        socket_timeout=_STORAGE_TIMEOUT_S,
        socket_connect_timeout=_STORAGE_TIMEOUT_S,
    )
    assert isinstance(storage, Storage)
    return storage, True


@dataclass
class _Grant:
    window: int  # the clock second whose counter holds these units
    at: float  # when the next of them may go (time.time())
    left: int


class SenderRate:
    """One sender's shared rate, as one dispatcher process uses it (thread-safe)."""

    def __init__(
        self,
        *,
        key: str,
        per_second: float,
        storage: Storage | None = None,
        shared: bool = False,
        live: Callable[[], int] = lambda: 1,
        hold_s: float = 30.0,
        ramp_s: float = 60.0,
    ) -> None:
        self.key = key
        self.per_second = per_second
        self.capacity = max(1, round(per_second * UNIT))  # units a window holds
        self.hold_s, self.ramp_s = hold_s, ramp_s
        self.shared = shared
        self._storage = storage or MemoryStorage()
        self._local = MemoryStorage() if shared else self._storage
        self._live = live
        self._grants: deque[_Grant] = deque()
        self._next = 0.0  # the end of this process's last reservation
        self._shared_from = 0.0  # after a storage error: when to use the shared storage again
        self._lock = threading.Lock()

    # -- sending -------------------------------------------------------------------------

    def wait(self, segments: int = 1) -> bool:
        """Sleep until a message of `segments` may go. False, at once, when the sender is held
        or no slot is free within a minute: the message waits for a later batch."""
        at = self._take(max(1, segments) * UNIT)
        if at is None:
            return False
        delay = at - time.time()
        if delay > 1.0 and self.held_until() is not None:
            return False  # held by another process: the batch in hand need not wait it out
        if delay > 0:
            time.sleep(delay)
        return True

    def _take(self, need: int) -> float | None:
        with self._lock:
            now = time.time()
            while self._grants and self._grants[0].window + 1 <= now:
                self._grants.popleft()  # unused, and its second has passed
            have = sum(g.left for g in self._grants)
            if have < need:
                self._reserve(max(need - have, int(self.capacity * _BLOCK_S)), now)
                if sum(g.left for g in self._grants) < need:
                    return None
            at = now
            while need:
                grant = self._grants[0]
                taken = min(need, grant.left)
                at = max(at, grant.at)
                grant.at += taken / self._rate_units()
                grant.left -= taken
                need -= taken
                if not grant.left:
                    self._grants.popleft()
            return at

    def _rate_units(self) -> float:
        return float(self.capacity if self._shared_now() else self._share())

    def _share(self) -> int:
        return max(1, self.capacity // max(1, self._live()))

    def _shared_now(self) -> bool:
        return self.shared and time.time() >= self._shared_from

    def _reserve(self, want: int, now: float) -> None:
        """Reserve `want` units in the windows ahead (never beyond the horizon)."""
        storage, capacity = self._store()
        try:
            self._reserve_in(storage, capacity, want, now)
        except StorageError as exc:
            self._shared_down(exc)  # and this reservation comes from the local share
            self._reserve_in(self._local, self._share(), want, now)

    def _reserve_in(self, storage: Storage, capacity: int, want: int, now: float) -> None:
        t = max(now, self._next)
        window = math.floor(t)
        while want > 0 and window <= now + _HORIZON_S:
            t = max(t, window)
            # No more than can be sent, at the full rate, before the window ends.
            ask = min(want, int((window + 1 - t) * capacity))
            if ask > 0:
                count = storage.incr(self._window_key(window), int(window - now) + 3, ask)
                got = max(0, min(ask, capacity - (count - ask)))
                if got:
                    self._grants.append(_Grant(window, t, got))
                    t += got / capacity
                    want -= got
            window += 1
        self._next = t

    def _store(self) -> tuple[Storage, int]:
        if self._shared_now():
            return self._storage, self.capacity
        return self._local, self._share()

    def _shared_down(self, exc: Exception) -> None:
        log.warning(
            "sender rate: storage unavailable; this process takes its share alone",
            extra={"sender": self.key, "error": type(exc).__name__},
        )
        self._shared_from = time.time() + _RETRY_SHARED_S

    def _window_key(self, window: int) -> str:
        return f"sender/{self.key}/{window}"

    # -- backpressure ----------------------------------------------------------------------

    def hold(self) -> float:
        """The provider's queue for this sender is full: nobody sends on it for hold_s, then the
        rate comes back over ramp_s. Returns when the hold ends (time.time())."""
        now = time.time()
        with self._lock:
            self._grants.clear()
            self._next = max(self._next, now + self.hold_s)
            storage, capacity = self._store()
            try:
                first = storage.incr(self._hold_key(), math.ceil(self.hold_s), 1) == 1
                if first:
                    self._fill(storage, capacity, now)
                until = storage.get_expiry(self._hold_key())
            except StorageError as exc:
                self._shared_down(exc)
                return now + self.hold_s
        if first:
            log.warning("sender held: the provider's queue is full", extra={"sender": self.key})
        return max(until, now)

    def _fill(self, storage: Storage, capacity: int, now: float) -> None:
        start = math.floor(now)
        hold, ramp = math.ceil(self.hold_s), math.ceil(self.ramp_s)
        for i in range(hold + ramp):
            taken = capacity if i < hold else capacity * (hold + ramp - i) // (ramp + 1)
            if taken:
                storage.incr(self._window_key(start + i), i + 3, taken)

    def held_until(self) -> float | None:
        """When the hold on this sender ends (time.time()), or None when there is none."""
        storage, _ = self._store()
        try:
            if not storage.get(self._hold_key()):
                return None
            return storage.get_expiry(self._hold_key())
        except StorageError as exc:
            self._shared_down(exc)
            return None

    def pause(self, seconds: float) -> None:
        """This process sends nothing for `seconds` (a provider's Retry-After to us)."""
        with self._lock:
            self._grants.clear()
            self._next = max(self._next, time.time() + seconds)

    def _hold_key(self) -> str:
        return f"sender/{self.key}/hold"
