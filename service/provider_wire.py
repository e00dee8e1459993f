"""What is checked at the wire with a remote provider, below its client (the twilio SDK,
geopy and requests, smtplib):

- fencing: a dispatcher's send window (send_window.py) is checked before each write of an
  HTTP request (smtp_email.py checks it before DATA and before the message); outside a send
  window (the geocoder) the check passes;
- a bound on a whole exchange with the provider: the clients' timeouts bound each connect
  and each read, so a provider that trickles its answer (a byte every few seconds) holds the
  request, and the batch or the thread behind it, for as long as it likes. Within
  `bounded(total_s)`, each socket written on (or given) is shut at the bound
  (socket_watchdog.py): the read fails, and the caller sees a dropped connection (for a
  send, an unknown outcome, looked up before a resend).

It sits in the ground layer: the dispatcher's notifiers and the geocoder both use it."""

import itertools
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from service.send_window import check_send_window
from service.socket_watchdog import SocketWatchdog

_WATCHDOG = SocketWatchdog(
    cut_message="provider connection cut: its exchange took longer than the bound",
    logger="anjeon.providers",  # the notifiers' and the geocoder's
    thread_name="provider-watchdog",
)
_keys = itertools.count(1)


class _Bound:
    def __init__(self, ends_at: float) -> None:
        self.ends_at = ends_at
        # Each connection (or socket) watched, and its watch's key (unique: never an id() that
        # a freed connection could hand to another thread's).
        self.watched: dict[object, int] = {}


_bound: ContextVar[_Bound | None] = ContextVar("provider_wire", default=None)


@contextmanager
def bounded(total_s: float) -> Iterator[None]:
    """The requests made in this block (and their answers) end within `total_s` seconds, and
    so does whatever is done on the sockets given to watch_socket() in it."""
    bound = _Bound(time.monotonic() + total_s)
    token = _bound.set(bound)
    try:
        yield
    finally:
        _bound.reset(token)
        for key in bound.watched.values():
            _WATCHDOG.forget(key)


def watch_socket(sock: socket.socket) -> None:
    """Watch `sock` under the current bound, if there is one (a client's socket made inside
    it, such as an SMTP connection's)."""
    bound = _bound.get()
    if bound is not None:
        _watch(bound, sock, sock.fileno())


def _watch(bound: _Bound, holder: object, fd: int) -> None:
    if holder not in bound.watched:
        key = next(_keys)
        bound.watched[holder] = key
        _WATCHDOG.watch(key, fd, bound.ends_at)


class BoundPassed(ConnectionError):
    """The exchange's bound passed before a request was written: nothing was sent."""


class _Checked:
    """Before each write: connected, the bound not passed, the send window still open, the
    socket watched."""

    def send(self, data: bytes) -> None:
        if self.sock is None:  # type: ignore[attr-defined]
            self.connect()  # type: ignore[attr-defined]  # as http.client would, but first
        bound = _bound.get()
        if bound is not None and time.monotonic() >= bound.ends_at:
            # A retry (or a slow connect) past the bound: the provider is not asked again.
            raise BoundPassed("the exchange's bound passed before the request was sent")
        check_send_window()  # after connecting: nothing but this write comes after it
        if bound is not None:
            # Held by (connection, socket): forgotten when the pool takes the connection back,
            # whether or not it is still open (_ForgetsReturned).
            _watch(bound, (self, self.sock), self.sock.fileno())  # type: ignore[attr-defined]
        super().send(data)  # type: ignore[misc]


class _BoundedHTTPConnection(_Checked, HTTPConnection):
    pass


class _BoundedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class _ForgetsReturned:
    """A connection handed back to its pool has finished its exchange: its watch ends then,
    not when the bound does, or another thread taking it from the pool meanwhile could be
    cut at this bound."""

    def _put_conn(self, conn: HTTPConnection | None) -> None:
        bound = _bound.get()
        if bound is not None and conn is not None:
            for holder in [h for h in bound.watched if isinstance(h, tuple) and h[0] is conn]:
                _WATCHDOG.forget(bound.watched.pop(holder))
        super()._put_conn(conn)  # type: ignore[misc]


class _BoundedHTTPPool(_ForgetsReturned, HTTPConnectionPool):
    ConnectionCls = _BoundedHTTPConnection


class _BoundedHTTPSPool(_ForgetsReturned, HTTPSConnectionPool):
    ConnectionCls = _BoundedHTTPSConnection


_POOLS = {"http": _BoundedHTTPPool, "https": _BoundedHTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """Mount on a requests session for both schemes. urllib3 closes a connection an exception
    leaves mid-request, so a half-written request is never completed."""

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not isinstance(manager, ProxyManager):
            return manager  # SOCKS: its own connection classes carry the proxy (no late check)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
