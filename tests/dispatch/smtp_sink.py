"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and answers
scripted replies per recipient. It also plays provider faults for a window of time or a
number of connections or messages (`fault("421" | "stall" | "drop", ...)`), and logs every
connection and message with its time, so a test can count how hard a client hammered it."""

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.dispatch.fault_window import Window, take, within
from tests.loopback_server import free_port

# Where each fault strikes: a new connection's greeting, or a message's final reply.
FAULT_STAGES = {
    "421": ("connect",),
    "stall": ("connect", "data"),
    "drop": ("data",),
    "trickle": ("data", "rcpt", "connect"),
}


@dataclass(kw_only=True)
class SmtpFault(Window):
    """A relay fault, in its window or for its first `count` connections (or messages):

    - "421": a new connection is greeted with 421 and closed (a relay shedding load);
    - "stall" at "connect": the connection is accepted and nothing is said for `stall_s`
      (longer than the client's timeout); at "data": the message is received and kept, and
      its final reply never comes in time (RFC 1047's duplicate: the relay has it);
    - "drop": the message is received and kept, then the connection is cut before the final
      reply (the outcome is unknown to the client);
    - "trickle" at "data": the message is received and kept, then the final reply is sent a
      byte at a time, `stall_s` apart (no single read waits long: only a bound on the whole
      ends it); at "rcpt": the reply to RCPT is, and the recipient is not taken; at
      "connect": the greeting is, and the connection then closed."""

    kind: str
    stage: str
    to: str | None = None  # "data" faults: only messages to this address
    stall_s: float = 2.0

    def covers(self, at: float, stage: str, recipients: tuple[str, ...]) -> bool:
        if stage != self.stage or (self.to is not None and self.to not in recipients):
            return False
        return self.active(at)


@dataclass(frozen=True)
class SmtpEvent:
    """A connection ("connect": "220", "421", "stalled") or a message ("data": "250",
    "dropped", "stalled") the sink saw, with its recipients."""

    at: float  # time.monotonic()
    stage: str
    to: tuple[str, ...]
    answer: str


@dataclass
class SmtpSink:
    received: list[EmailMessage] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # every RCPT TO
    replies: dict[str, deque] = field(default_factory=dict)  # by address: "451 ..." etc
    events: list[SmtpEvent] = field(default_factory=list)
    faults: list[SmtpFault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None

    @property
    def port(self) -> int:
        assert self.controller is not None
        return self.controller.port

    def script(self, address: str, *replies: str) -> None:
        with self.lock:
            self.replies.setdefault(address, deque()).extend(replies)

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.received if m["To"] == address]

    def to_within(self, address: str, timeout_s: float = 10.0) -> list[EmailMessage]:
        """What `address` received, once it has received something or after `timeout_s`: for
        mail sent from a thread of the service's own, after the request that set it off."""
        deadline = time.monotonic() + timeout_s
        while not self.to(address) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.to(address)

    def fault(
        self,
        kind: str,
        *,
        for_s: float | None = None,
        count: int | None = None,
        after: Window | None = None,
        on_first_request: bool = False,
        at: str | None = None,
        to: str | None = None,
        stall_s: float = 2.0,
    ) -> SmtpFault:
        """A relay fault for `for_s` seconds or `count` hits, from now, from the first
        connection or message at its stage, or from the end of the fault `after` (see
        SmtpFault); `at` picks the stage of a stall ("connect", the default, or "data")."""
        assert kind in FAULT_STAGES, kind
        stage = at or FAULT_STAGES[kind][0]
        assert stage in FAULT_STAGES[kind], (kind, stage)
        fault = SmtpFault(
            kind=kind,
            stage=stage,
            for_s=for_s,
            count=count,
            after=after,
            on_first_request=on_first_request,
            to=to,
            stall_s=stall_s,
        )
        with self.lock:
            self.faults.append(fault)
        return fault

    def during(self, fault: SmtpFault, stage: str | None = None) -> list[SmtpEvent]:
        """What the sink saw within the fault's window (at `stage`, if given)."""
        with self.lock:
            return within(fault, self.events, lambda e: stage in (None, e.stage))

    def _fault_for(self, stage: str, recipients: tuple[str, ...] = ()) -> SmtpFault | None:
        with self.lock:
            # A fault waiting for the first request starts at the first of its own stage: a
            # window of drops after DATA that started at the first connection could end, on a
            # loaded machine, before the first message (a CI run saw none dropped).
            return take(
                self.faults,
                lambda f, now: f.covers(now, stage, recipients),
                arms=lambda f: f.stage == stage,
            )

    def _log(self, stage: str, to: tuple[str, ...], answer: str) -> None:
        with self.lock:
            self.events.append(SmtpEvent(time.monotonic(), stage, to, answer))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts.append(address)
            queue = self.replies.get(address)
            reply = queue.popleft() if queue else None
        if reply:
            return reply
        fault = self._fault_for("rcpt", (address,))
        if fault is not None:  # a trickle: the only fault at this stage
            self._log("rcpt", (address,), "trickled")
            return await _trickle(server, "250 OK", fault.stall_s)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        recipients = tuple(envelope.rcpt_tos)
        fault = self._fault_for("data", recipients)
        with self.lock:
            self.received.append(message)  # in every case: the relay has it
        if fault is None:
            self._log("data", recipients, "250")
            return "250 Message accepted for delivery"
        if fault.kind == "drop":
            self._log("data", recipients, "dropped")
            server.transport.abort()
            await asyncio.sleep(3600)  # cancelled by the lost connection
        if fault.kind == "trickle":
            self._log("data", recipients, "trickled")
            return await _trickle(server, "250 Message accepted for delivery", fault.stall_s)
        self._log("data", recipients, "stalled")
        await asyncio.sleep(fault.stall_s)  # the client gives up meanwhile
        return "250 Message accepted for delivery"

    def start(self) -> "SmtpSink":
        self.controller = _FaultyController(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()


async def _trickle(server: SMTP, reply: str, every_s: float) -> str:
    """Sends `reply` but its last character a byte every `every_s`; returns that character
    (aiosmtpd sends it, and the CRLF)."""
    try:
        for byte in reply[:-1].encode():
            await asyncio.sleep(every_s)
            server._writer.write(bytes([byte]))
            await server._writer.drain()
    except OSError:  # the client cut it
        await asyncio.sleep(3600)  # cancelled by the lost connection
    return reply[-1]


class _FaultySMTP(SMTP):
    """aiosmtpd's server with the connection faults in front of its greeting (the greeting
    is sent by the private _handle_client: there is no public hook before it)."""

    async def _handle_client(self) -> None:
        sink = self.event_handler
        fault = sink._fault_for("connect")
        if fault is None:
            sink._log("connect", (), "220")
            await super()._handle_client()
            return
        assert self.transport is not None
        if fault.kind == "421":
            sink._log("connect", (), "421")
            await self.push("421 4.3.2 Service not available, closing transmission channel")
        elif fault.kind == "trickle":
            sink._log("connect", (), "trickled")
            await self.push(await _trickle(self, "220 sink ready", fault.stall_s))
        else:
            sink._log("connect", (), "stalled")
            await asyncio.sleep(fault.stall_s)
        if self.transport is not None:
            self.transport.close()


class _FaultyController(Controller):
    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)
