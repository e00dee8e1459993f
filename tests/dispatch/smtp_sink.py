"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and answers
scripted replies per recipient."""

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpSink:
    received: list[EmailMessage] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # every RCPT TO
    replies: dict[str, deque] = field(default_factory=dict)  # by address: "451 ..." etc
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

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts.append(address)
            queue = self.replies.get(address)
            reply = queue.popleft() if queue else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.received.append(message)
        return "250 Message accepted for delivery"

    def start(self) -> "SmtpSink":
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
