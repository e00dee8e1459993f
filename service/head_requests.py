"""HEAD is answered as GET without its body (RFC 9110 §9.3.2). FastAPI's routes answer only the
methods they name, so a load balancer's or an uptime monitor's HEAD /healthz was a 405."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ASKED_FOR_HEAD = "anjeon.head"


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                # The headers (Content-Length included) are those GET would send.
                message = {**message, "body": b""}
            await send(message)

        # In place, not a copy: the route the router finds lands in the scope the access log
        # and the metrics read (a copy left every HEAD "unmatched").
        scope["method"], scope[_ASKED_FOR_HEAD] = "GET", True
        try:
            await self.app(scope, receive, send_headers_only)
        finally:
            scope["method"] = "HEAD"


def method_asked(scope: Scope) -> str:
    """The method the client sent: HEAD where this middleware answers it as GET."""
    return "HEAD" if scope.get(_ASKED_FOR_HEAD) else scope["method"]
