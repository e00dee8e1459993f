"""The socket watchdog of service/db.py and the providers' requests on its own (no database):
it is woken only when a deadline comes before its next look, so its schedule must stay right
whichever order deadlines come in; and it shuts only the socket it was given."""

import socket
import time

from service.socket_watchdog import SocketWatchdog


def _cut_within(peer: socket.socket, seconds: float) -> bool:
    """Whether the watched end was shut (the peer reads end-of-file) within `seconds`."""
    peer.settimeout(seconds)
    try:
        return peer.recv(1) == b""
    except TimeoutError:
        return False


def _watchdog() -> SocketWatchdog:
    return SocketWatchdog(cut_message="cut", logger="anjeon.test", thread_name="test-watchdog")


def test_each_connection_is_cut_at_its_own_deadline_whatever_the_order() -> None:
    watchdog = _watchdog()
    late, late_peer = socket.socketpair()
    soon, soon_peer = socket.socketpair()
    kept, kept_peer = socket.socketpair()
    try:
        now = time.monotonic()
        watchdog.watch(1, late.fileno(), now + 1.2)  # the thread starts and waits for this one
        watchdog.watch(2, soon.fileno(), now + 0.3)  # sooner: it must be woken for it
        watchdog.watch(3, kept.fileno(), now + 0.6)
        watchdog.forget(3)  # handed back in time: never cut
        assert _cut_within(soon_peer, 0.9)
        assert not _cut_within(late_peer, 0.3)  # not before its own deadline
        assert _cut_within(late_peer, 1.5)
        assert not _cut_within(kept_peer, 0.2)
        # Later deadlines added while it waits for a sooner one are still kept.
        again, again_peer = socket.socketpair()
        with again, again_peer:
            watchdog.watch(4, again.fileno(), time.monotonic() + 0.2)
            assert _cut_within(again_peer, 1.5)
    finally:
        for s in (late, late_peer, soon, soon_peer, kept, kept_peer):
            s.close()


def test_a_socket_closed_before_its_watch_is_forgotten_leaves_its_number_s_next_owner_alone():
    """urllib3 closes a connection on an error before the bounded request forgets its watch;
    the descriptor's number may then go to another socket (a database connection). The
    watchdog shuts what it was given (its own duplicate), not whatever holds that number."""
    watchdog = _watchdog()
    gone, gone_peer = socket.socketpair()
    number = gone.fileno()
    watchdog.watch(1, number, time.monotonic() + 0.3)
    gone.close()  # the client closed it; the watch is still there
    reused, reused_peer = socket.socketpair()
    try:
        assert number in (reused.fileno(), reused_peer.fileno())  # the number went to another
        other_peer = reused_peer if reused.fileno() == number else reused
        assert not _cut_within(other_peer, 0.8)  # its new owner was not shut
        assert _cut_within(gone_peer, 0.5)  # the watched socket itself was
    finally:
        watchdog.forget(1)
        for s in (gone_peer, reused, reused_peer):
            s.close()
