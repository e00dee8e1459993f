"""A path that differs from a route's by its trailing slash is redirected to the route.

Starlette does this itself, but writes an absolute Location from the request's Host header:
anyone could make our answer point at a host of their choosing (cache poisoning behind a proxy
that keys on the path). This redirect is relative, so it stays on the host the browser asked."""

from urllib.parse import quote

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import Match
from starlette.types import Receive, Scope, Send


def install_slash_redirect(app: FastAPI) -> None:
    router = app.router
    router.redirect_slashes = False
    not_found = router.default

    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/":
            path = scope["path"]
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            # "//host" would be read as another host by the browser: never a Location here.
            if other and not other.startswith("//"):
                probe = {**scope, "path": other}
                if any(route.matches(probe)[0] is not Match.NONE for route in router.routes):
                    location = quote(scope.get("root_path", "") + other)
                    if query := scope.get("query_string", b"").decode("latin-1"):
                        location += "?" + query
                    await RedirectResponse(location, status_code=307)(scope, receive, send)
                    return
        await not_found(scope, receive, send)

    router.default = redirect_or_not_found
