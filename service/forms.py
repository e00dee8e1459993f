"""What the endpoints that take forms share: providers' webhooks (Twilio posts urlencoded
forms) and the citizens' link pages (/a/, /c/), with the headers those pages are sent with."""

from urllib.parse import parse_qsl

from fastapi import Request

from service.errors import InvalidInput

# Twilio's webhooks send about 30 fields, the pages two. Parsed in the event loop: a body of
# half a million empty fields took 0.26 s of it, and nothing else was served meanwhile.
FORM_FIELDS_MAX = 100
# A check-in page's form: an answer and a note of at most 500 characters, percent-encoded.
PAGE_FORM_BYTES = 8_192


async def form_fields(request: Request) -> dict[str, str]:
    """A urlencoded body as a dict, read as sent (a signature covers exactly these fields)."""
    body = (await request.body()).decode(errors="replace")
    try:
        fields = parse_qsl(body, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX)
    except ValueError:
        raise InvalidInput("body", f"at most {FORM_FIELDS_MAX} form fields") from None
    return dict(fields)


def signed_url(request: Request) -> str:
    """The URL a provider signed its webhook over: ours as the public sees it (behind a proxy
    the request's own host differs), with the request's path and query."""
    url = request.app.state.settings.public_base_url.rstrip("/") + request.url.path
    return url + "?" + request.url.query if request.url.query else url


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
