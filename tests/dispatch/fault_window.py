"""When a fake provider's fault strikes, shared by the fake Twilio and the SMTP sink: from
its start (now, the first request the server sees, or the end of another fault) for `for_s`
seconds, or for its first `count` hits. Times are time.monotonic()."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(kw_only=True)
class Window:
    for_s: float | None = None
    count: int | None = None
    started: float | None = None  # None: not yet (see `after`, arm())
    after: "Window | None" = None  # starts when that one ends
    on_first_request: bool = False
    hits: int = 0  # requests answered badly
    ended: float | None = None  # when the last one was

    def __post_init__(self) -> None:
        assert (self.for_s is None) != (self.count is None), "a window or a count"
        if self.after is None and not self.on_first_request:
            self.started = time.monotonic()

    def arm(self, now: float) -> None:
        """A request reached the server: a fault waiting for the first one starts now."""
        if self.on_first_request and self.started is None:
            self.started = now

    def start(self) -> float | None:
        return self.after.end() if self.after is not None else self.started

    def end(self) -> float | None:
        start = self.start()
        if start is None:
            return None
        if self.for_s is not None:
            return start + self.for_s
        return self.ended if self.count is not None and self.hits >= self.count else None

    def active(self, at: float) -> bool:
        start = self.start()
        if start is None or at < start:
            return False
        if self.count is not None:
            return self.hits < self.count
        assert self.for_s is not None
        return at < start + self.for_s

    def hit(self, at: float) -> None:
        self.hits += 1
        self.ended = at

    @property
    def window(self) -> tuple[float, float]:
        """(start, end): the end is the window's, or the last bad answer, or now."""
        now = time.monotonic()
        start, end = self.start(), self.end()
        return (
            start if start is not None else now,
            end if end is not None else self.ended if self.ended is not None else now,
        )


class Timed(Protocol):
    at: float


Fault = TypeVar("Fault", bound=Window)
Event = TypeVar("Event", bound=Timed)


def take(
    faults: Sequence[Fault],
    covers: Callable[[Fault, float], bool],
    arms: Callable[[Fault], bool] = lambda _fault: True,
) -> Fault | None:
    """A request came: faults waiting for the first one (of those it `arms`) start, and the
    first fault that covers this request takes a hit (the caller holds its lock)."""
    now = time.monotonic()
    for fault in faults:
        if arms(fault):
            fault.arm(now)
    for fault in faults:
        if covers(fault, now):
            fault.hit(now)
            return fault
    return None


def within(fault: Window, events: Sequence[Event], keep: Callable[[Event], bool]) -> list[Event]:
    """The events (requests, connections) in the fault's window that `keep` keeps."""
    start, end = fault.window
    return [e for e in events if start <= e.at < end and keep(e)]
