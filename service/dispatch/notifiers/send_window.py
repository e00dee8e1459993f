"""The last moment a send may start: the dispatcher's claim on the alert, less a margin. The
dispatcher checks it before calling a notifier, but a process paused in between (a VM frozen,
SIGSTOP) would, on waking, send what another dispatcher took over and already resent: the
provider takes no fencing token. So a notifier checks it again as late as it can, as the
first byte leaves (for HTTP notifiers: in the connection's send, below the SDK and requests),
which leaves microseconds rather than the SDK's whole request-building in between."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

_closes_at: ContextVar[Callable[[], float] | None] = ContextVar("send_window", default=None)


class SendWindowClosed(Exception):
    """Nothing went: the claim may no longer be ours. Not an outcome: nothing may be recorded."""


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


class _WindowedHTTPConnection(HTTPConnection):
    def send(self, data: bytes) -> None:  # type: ignore[override]
        check_send_window()
        super().send(data)


class _WindowedHTTPSConnection(HTTPSConnection):
    def send(self, data: bytes) -> None:  # type: ignore[override]
        check_send_window()
        super().send(data)


class _WindowedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WindowedHTTPConnection


class _WindowedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WindowedHTTPSConnection


class WindowedAdapter(HTTPAdapter):
    """A requests adapter whose connections check the send window before each write. urllib3
    closes a connection an exception leaves mid-request, so a half-written request is never
    completed."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WindowedHTTPPool,
            "https": _WindowedHTTPSPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not isinstance(manager, ProxyManager):
            return manager  # SOCKS: its own connection classes carry the proxy (no late check)
        manager.pool_classes_by_scheme = {"http": _WindowedHTTPPool, "https": _WindowedHTTPSPool}
        return manager
