"""Headers every API answer carries unless its endpoint set its own."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiNoStoreMiddleware:
    """`Cache-Control: no-store` on /v1/ answers: most carry personal data (a record, a reveal,
    a roll call), a secret shown once (a manage token, a new staff key) or staff-only figures,
    and none may be kept by a browser's or a proxy's cache. The one home of that header for the
    API; an endpoint that sets its own Cache-Control keeps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)
