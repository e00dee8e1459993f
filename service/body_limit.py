"""Refuse request bodies over the configured size with a 413 problem, before the app reads them."""

import json
from collections.abc import Callable

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(HTTPException):
    """An HTTPException so that, raised while the app reads the body, it renders as a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        staff_larger: dict[str, int] | None = None,
        smaller: dict[str, int] | None = None,
        may_send_larger: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        # Path prefixes allowed more to keys that may issue advisories alone (polygons and feed
        # documents are big): anyone else would have us parse megabytes before the 401 or 403.
        self.staff_larger = sorted((staff_larger or {}).items(), key=lambda item: -len(item[0]))
        # Path prefixes allowed less (providers' webhooks are small forms).
        self.smaller = sorted((smaller or {}).items(), key=lambda item: -len(item[0]))
        self.may_send_larger = may_send_larger or (lambda _token: False)

    def _limits(self, path: str) -> tuple[int, int]:
        """(what anyone may send, what a staff key may send) to path."""
        small = next((n for prefix, n in self.smaller if path.startswith(prefix)), None)
        if small is not None:
            return small, small
        large = next((n for prefix, n in self.staff_larger if path.startswith(prefix)), None)
        return self.default_max, large or self.default_max

    async def _staff_sent(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return await anyio.to_thread.run_sync(self.may_send_larger, token.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, staff_limit = self._limits(scope["path"])
        checked = False
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) > staff_limit or not await self._staff_sent(scope):
                await self._refuse(send, staff_limit if int(declared) > staff_limit else limit)
                return
            limit, checked = staff_limit, True

        # Chunked bodies declare no length: count what arrives.
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, limit, checked
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not checked and staff_limit > limit:
                    checked = True
                    if await self._staff_sent(scope):
                        limit = staff_limit
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "type": "urn:anjeon:problem:body-too-large",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"request body is larger than {limit} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
