"""What the endpoints that take forms share: providers' webhooks (Twilio posts urlencoded
forms) and the citizens' link pages (/a/, /c/), with the headers those pages are sent with."""

from urllib.parse import parse_qsl

from fastapi import Request


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded body as a dict, read as sent (a signature covers exactly these fields)."""
    return dict(parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True))


# The citizens' link pages are ours alone: no script, no frames, no guessing of their type, not
# kept in caches, not indexed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}
