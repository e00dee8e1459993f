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


class SocketWatchdog:
    """One thread per watchdog, sleeping until the soonest deadline it watches. It keeps its own
    duplicate of each watched descriptor: a client may close its socket before it forgets the
    watch (urllib3 does, on an error), and the number could then be handed to another socket,
    which the watchdog would shut in its place."""

    def __init__(self, *, cut_message: str, logger: str, thread_name: str) -> None:
        self._cut_message = cut_message
        self._log = logging.getLogger(logger)
        self._thread_name = thread_name
        self._changed = threading.Condition()
        self._watched: dict[int, tuple[float, int]] = {}  # key -> (deadline, our duplicate fd)
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread next looks, unless woken

    def watch(self, key: int, fd: int, at: float) -> None:
        """Shut the socket of `fd` at `at` (time.monotonic()) unless `key` is forgotten first."""
        own = os.dup(fd)
        with self._changed:
            earlier = self._watched.pop(key, None)
            self._watched[key] = (at, own)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=self._thread_name, daemon=True
                )
                self._thread.start()
            elif at < self._wakes_at:
                # Woken only when this deadline comes before its next look: a wake-up on every
                # checkout cost a busy worker a sixth of its time in GIL hand-offs.
                self._changed.notify()
        if earlier is not None:
            os.close(earlier[1])

    def forget(self, key: int) -> None:
        with self._changed:
            watched = self._watched.pop(key, None)
        if watched is not None:
            os.close(watched[1])

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (at, own) in list(self._watched.items()):
                    if at <= now:
                        del self._watched[key]
                        self._shut(own)
                soonest = min((at for at, _ in self._watched.values()), default=math.inf)
                self._wakes_at = soonest
                self._changed.wait(None if soonest == math.inf else soonest - now)

    def _shut(self, own: int) -> None:
        try:
            with socket.socket(fileno=own) as sock:  # closes our duplicate afterwards
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return  # the socket was closed by its client meanwhile
        self._log.warning(self._cut_message)
