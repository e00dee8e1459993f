"""A loopback TCP proxy a test controls, to cut a service off its database (no Toxiproxy here).

    proxy = TcpProxy("127.0.0.1", 5432).start()   # 127.0.0.1:proxy.port -> the real server
    proxy.refuse()    # open connections are reset; new ones are reset as soon as accepted
    proxy.stall()     # new connections are accepted and never answered; open ones go silent
    proxy.forward()   # back to normal: what stalled is reset, new connections are forwarded
    proxy.forward(reset_stalled=False)  # ...but what stalled stays silent for ever
    proxy.stop()

"Silent" is a peer whose kernel still acknowledges every byte while nothing comes back: TCP
keepalives and tcp_user_timeout do not see it, only the client's own bounds do."""

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine

FORWARD, REFUSE, STALL = "forward", "refuse", "stall"
_CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = FORWARD
        self.port = 0
        self.accepted = 0  # connections accepted, in any mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        # Each open connection (client side) with the gate its bytes pass: closed while stalled.
        self._open: dict[asyncio.StreamWriter, asyncio.Event] = {}
        self._upstream: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- control, from the test's thread ------------------------------------------------------

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def forward(self, *, reset_stalled: bool = True) -> None:
        self._call(self._switch(FORWARD, reset_stalled=reset_stalled))

    def refuse(self) -> None:
        self._call(self._switch(REFUSE))

    def stall(self) -> None:
        self._call(self._switch(STALL))

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, step: Coroutine[None, None, None]) -> None:
        asyncio.run_coroutine_threadsafe(step, self._loop).result(timeout=10)

    # -- the loop's side -----------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: str, *, reset_stalled: bool = True) -> None:
        previous, self.mode = self.mode, mode
        if mode == STALL:
            for gate in self._open.values():
                gate.clear()
        elif mode == REFUSE or (previous == STALL and reset_stalled):
            # Refused, or forwarded again as a restarted server would be: what was open is reset.
            self._reset_all()
        # Forwarded again without a reset: what stalled stays silent, as behind a broken NAT
        # or a pooler that lost its server but not its clients.

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        if self._tasks:  # the pumps wake to closed sockets and end
            await asyncio.wait(self._tasks, timeout=5)

    def _reset_all(self) -> None:
        for client, gate in list(self._open.items()):
            _reset(client)
            upstream = self._upstream.pop(client, None)
            if upstream is not None:
                _reset(upstream)
            gate.set()  # the pumps wake, find their sockets closed and end
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == REFUSE:
            _reset(writer)
            return
        gate = asyncio.Event()
        self._open[writer] = gate
        if self.mode == STALL:
            return  # held open, never answered
        gate.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            self._open.pop(writer, None)
            return
        self._upstream[writer] = up_writer
        await asyncio.gather(
            _pump(reader, up_writer, gate),
            _pump(up_reader, writer, gate),
        )
        self._open.pop(writer, None)
        self._upstream.pop(writer, None)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
) -> None:
    try:
        while True:
            await gate.wait()  # while stalled, bytes stay in the kernel's buffers
            data = await reader.read(_CHUNK)
            if not data:
                break
            await gate.wait()
            if writer.is_closing():
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (linger 0), as a refused or crashed peer does."""
    if writer.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
