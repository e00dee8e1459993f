"""Shuts a socket whose holder is past its deadline: the one bound that holds against a peer
that stalls or trickles while its kernel still acknowledges (keepalives and per-read timeouts
see a live connection). The blocked call wakes with an error, and its client drops the
connection. Used for the database's connections and the providers' HTTP requests."""

import logging
import math
import os
import socket
import threading
import time

log = logging.getLogger("anjeon.socket_watchdog")


class SocketWatchdog:
    """One thread per watchdog, sleeping until the soonest deadline it watches."""

    def __init__(self, cut_message: str) -> None:
        self._cut_message = cut_message
        self._changed = threading.Condition()
        self._watched: dict[int, tuple[float, int]] = {}  # key -> (deadline, socket fd)
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread next looks, unless woken

    def watch(self, key: int, fd: int, at: float) -> None:
        """Shut `fd` at `at` (time.monotonic()) unless `key` is forgotten first."""
        with self._changed:
            self._watched[key] = (at, fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="socket-watchdog", daemon=True
                )
                self._thread.start()
            elif at < self._wakes_at:
                # Woken only when this deadline comes before its next look: a wake-up on every
                # checkout cost a busy worker a sixth of its time in GIL hand-offs.
                self._changed.notify()

    def forget(self, key: int) -> None:
        with self._changed:
            self._watched.pop(key, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (at, fd) in list(self._watched.items()):
                    if at <= now:
                        del self._watched[key]
                        self._shut(fd)
                soonest = min((at for at, _ in self._watched.values()), default=math.inf)
                self._wakes_at = soonest
                self._changed.wait(None if soonest == math.inf else soonest - now)

    def _shut(self, fd: int) -> None:
        # Under the watchdog's lock, so the socket cannot be closed (and its fd reused) meanwhile.
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return  # already closed
        log.warning(self._cut_message)
