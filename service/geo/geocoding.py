"""Turning an address into a point, behind a small interface so tests and operators can swap it."""

import math
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from geopy.adapters import BaseSyncAdapter, RequestsAdapter, RequestsHTTPWithSSLContextAdapter
from geopy.exc import GeopyError
from geopy.geocoders import Nominatim
from urllib3.util.retry import Retry

from service.db import REQUEST_DEADLINE
from service.provider_wire import BoundedAdapter, bounded

# Nominatim's usage policy: at most one request a second, from the whole service.
NOMINATIM_INTERVAL_S = 1.0
# How long an address may wait for its turn, and how many may wait in one process. geopy's
# RateLimiter queued every caller, each asleep on a worker thread: forty requests with an
# address (anyone may send them, to any citizen id) held every thread of the API's pool.
MAX_WAIT_S = 5.0
MAX_WAITING = 4


@dataclass(frozen=True)
class GeocodedPoint:
    lat: float
    lon: float


class GeocodingDisabled(Exception):
    """No geocoder is configured."""


class GeocoderFailed(Exception):
    """The geocoding service could not be reached or answered an error."""


class GeocoderBusy(Exception):
    """Too many addresses are waiting for the geocoder's one request a second."""

    def __init__(self, retry_after_s: float, *, turn_taken: bool = False) -> None:
        super().__init__(f"the geocoder is busy; retry in {math.ceil(retry_after_s)} s")
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.turn_taken = turn_taken  # a turn of the whole service's was spent all the same


class OneTurnAtATime:
    """This process's own pacing: 0 when a request may go now (the turn is taken), otherwise
    the seconds until the next turn. The service passes a turn shared by its processes
    (rate_limits.RateLimits.geocoder_turn)."""

    def __init__(self, interval_s: float = NOMINATIM_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._next = 0.0

    def __call__(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self._interval_s
                return 0.0
            return self._next - now


class Geocoder(Protocol):
    def geocode(self, address: str) -> GeocodedPoint | None:
        """The best point for an address, None if the address is unknown."""
        ...


class NoGeocoder:
    def geocode(self, address: str) -> GeocodedPoint | None:
        raise GeocodingDisabled


class _BoundedHTTPSAdapter(BoundedAdapter, RequestsHTTPWithSSLContextAdapter):
    """geopy's HTTPS adapter (its SSL context kept) on provider_wire's watched connections."""


class BoundedRequestsAdapter(RequestsAdapter):
    """geopy's requests adapter, its connections those of provider_wire: a look-up inside
    `bounded()` ends at the bound, however slowly the answer trickles in. geopy's timeout
    bounds each connect and each read alone: a Nominatim (or a proxy) sending a byte a
    second held a registration's thread for as long as it went on, and with forty such, the
    API's whole pool. A connection that fails is tried again (geopy's two retries), but not
    a request that was sent: a cut answer is not asked for again outside the turns, and
    nothing is sent once the bound has passed (provider_wire.BoundPassed)."""

    def __init__(self, *, proxies: Any, ssl_context: ssl.SSLContext | None) -> None:
        ssl_context = ssl_context or ssl.create_default_context()  # as RequestsAdapter does
        super().__init__(proxies=proxies, ssl_context=ssl_context)
        retries = Retry(total=2, read=False)  # requests turns geopy's 2 into read retries too
        pool = {"pool_connections": 10, "pool_maxsize": 10, "max_retries": retries}
        self.session.mount("http://", BoundedAdapter(**pool))  # type: ignore[arg-type]
        self.session.mount("https://", _BoundedHTTPSAdapter(ssl_context=ssl_context, **pool))


class NominatimGeocoder:
    """OpenStreetMap Nominatim through geopy, one request a second (its usage policy) taken
    from `turn`; an address that would wait past MAX_WAIT_S, or find MAX_WAITING others
    already waiting for a turn, is refused at once (GeocoderBusy) rather than hold a thread.
    Within a request, a turn that leaves the look-up less than its timeout before the
    request's deadline is refused too: the addresses of one request share its time. A
    look-up, its answer read, ends within twice its timeout (and by the request's deadline)
    however slowly the answer comes (BoundedRequestsAdapter)."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float,
        adapter_factory: type[BaseSyncAdapter] | None = None,
        turn: Callable[[], float] | None = None,
        max_wait_s: float = MAX_WAIT_S,
        max_waiting: int = MAX_WAITING,
        url: str = "",
    ) -> None:
        options: dict[str, Any] = {"adapter_factory": adapter_factory or BoundedRequestsAdapter}
        if url:
            where = urlsplit(url)
            options |= {"domain": where.netloc, "scheme": where.scheme}
        self._nominatim = Nominatim(user_agent=user_agent, timeout=timeout_s, **options)
        self._timeout_s = timeout_s
        self._turn = turn or OneTurnAtATime()
        self._max_wait_s = max_wait_s
        self._waiting = threading.BoundedSemaphore(max_waiting)

    def geocode(self, address: str) -> GeocodedPoint | None:
        answer_by = self._answer_by()
        self._wait_for_turn(answer_by)
        # The turn left the look-up at least its timeout before the deadline (_wait_for_turn).
        total_s = min(2 * self._timeout_s, answer_by - time.monotonic())
        try:
            with bounded(total_s):
                location = self._nominatim.geocode(address, exactly_one=True)
        except GeopyError as exc:
            raise GeocoderFailed(type(exc).__name__) from exc
        if location is None:
            return None
        return GeocodedPoint(lat=location.latitude, lon=location.longitude)

    def _answer_by(self) -> float:
        """When the answer must have come: the request's deadline (math.inf outside one)."""
        request = REQUEST_DEADLINE.get()
        return math.inf if request is None or request.at is None else request.at

    def _wait_for_turn(self, answer_by: float) -> None:
        if not self._waiting.acquire(blocking=False):
            raise GeocoderBusy(self._max_wait_s)
        try:
            # The turn must leave the look-up its whole timeout before the request's deadline:
            # five addresses of one request waited up to 5 s each, past the deadline, with the
            # request's thread held all along and its answer (a 503) long sent.
            turn_by = min(time.monotonic() + self._max_wait_s, answer_by - self._timeout_s)
            while True:
                if time.monotonic() > turn_by:
                    raise GeocoderBusy(self._max_wait_s)
                wait = self._turn()
                if wait <= 0:
                    if time.monotonic() > turn_by:
                        # Taking the turn (a Redis round trip) ran into the look-up's time.
                        raise GeocoderBusy(1, turn_taken=True)
                    return
                if time.monotonic() + wait > turn_by:
                    raise GeocoderBusy(wait)
                time.sleep(wait)
        finally:
            self._waiting.release()


def make_geocoder(
    kind: str,
    *,
    user_agent: str,
    timeout_s: float,
    turn: Callable[[], float] | None = None,
    url: str = "",
) -> Geocoder:
    """`turn`: the service's shared turns (see OneTurnAtATime); `url`: a Nominatim of one's
    own (scheme and host), OpenStreetMap's public one when empty."""
    if kind == "nominatim":
        return NominatimGeocoder(user_agent=user_agent, timeout_s=timeout_s, turn=turn, url=url)
    return NoGeocoder()
