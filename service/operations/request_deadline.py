"""A deadline on every request: a response not started within the timeout is a 503 problem with
Retry-After, whatever the request is waiting for (most often the database). A pure ASGI
middleware: the deadline goes down to the worker threads in REQUEST_DEADLINE, where the
database bounds the request's connection and refuses its late commit (service/db.py)."""

import logging
import time

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import REQUEST_DEADLINE, Deadline
from service.problems import logged_route, unavailable

log = logging.getLogger("anjeon.http")


class RequestDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = Deadline(time.monotonic() + self.timeout_s)
        token = REQUEST_DEADLINE.set(deadline)
        started = answered = False

        async def send_unless_answered(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the client has had its 503; what the late request says goes nowhere
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                deadline.at = None  # sent: background tasks after it are not bounded
            await send(message)

        async def answer_when_late() -> None:
            nonlocal answered
            await anyio.sleep(self.timeout_s)
            if started:
                return
            answered = True
            log.warning(
                "request deadline passed",
                extra={
                    "method": scope["method"],
                    "route": logged_route(scope),
                    "s": self.timeout_s,
                },
            )
            late = unavailable(
                Request(scope),
                f"no answer within {self.timeout_s:g} s; nothing was changed, retry later",
            )
            await late(scope, receive, send)

        error: Exception | None = None
        try:
            async with anyio.create_task_group() as timer:
                timer.start_soon(answer_when_late)
                try:
                    await self.app(scope, receive, send_unless_answered)
                except Exception as exc:  # re-raised below, not wrapped in an ExceptionGroup
                    error = exc
                timer.cancel_scope.cancel()
        finally:
            REQUEST_DEADLINE.reset(token)
        if error is not None:
            raise error
