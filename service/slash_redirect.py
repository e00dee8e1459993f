"""A path that differs from a route's by its trailing slash is redirected to the route.

Starlette does this itself, but writes an absolute Location from the request's Host header:
anyone could make our answer point at a host of their choosing (cache poisoning behind a proxy
that keys on the path). This redirect is relative, so it stays on the host the browser asked."""

from urllib.parse import quote

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import Match, get_route_path
from starlette.types import Receive, Scope, Send

# A longer Location, path and query encoded, is no redirect but a 404: 60,000 characters
# would be a 502 at a proxy with ordinary header buffers (probe).
_LONGEST_LOCATION = 2_048


def install_slash_redirect(app: FastAPI) -> None:
    router = app.router
    router.redirect_slashes = False
    not_found = router.default

    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and get_route_path(scope) != "/":
            # scope["path"] holds the root_path too (Starlette 1): routes match without it.
            path = scope["path"]
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            probe = {**scope, "path": other}
            location = quote(other, safe="/:@!$&'()*+,;=-._~")
            # "//host" is read as another host by browsers: never a Location ("\" is quoted).
            local = location.startswith("/") and not location.startswith("//")
            if local and any(route.matches(probe)[0] is not Match.NONE for route in router.routes):
                # The query as the client sent it (already percent-encoded, or raw bytes, which
                # quote() encodes as they are).
                if query := scope.get("query_string", b""):
                    location += "?" + quote(query, safe="/?:@!$&'()*+,;=-._~%")
                if len(location) <= _LONGEST_LOCATION:
                    await RedirectResponse(location, status_code=307)(scope, receive, send)
                    return
        await not_found(scope, receive, send)

    router.default = redirect_or_not_found
