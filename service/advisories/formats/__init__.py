"""Feed formats: each turns a document's bytes into advisory drafts (see drafts.ParsedFeed)."""

from collections.abc import Callable, Mapping

from service.advisories.drafts import ParsedFeed
from service.advisories.formats.cap import parse_cap
from service.advisories.formats.geojson import parse_geojson
from service.advisories.formats.mofa import parse_mofa
from service.advisories.formats.rss import parse_rss
from service.advisories.formats.sniff import sniff_format

Parser = Callable[..., ParsedFeed]

PARSERS: dict[str, Parser] = {
    "cap": parse_cap,
    "geojson": parse_geojson,
    "rss": parse_rss,
    "mofa": parse_mofa,
}

# Content types POST /v1/advisories/import understands (parameters such as charset ignored).
CONTENT_TYPES = {
    "application/cap+xml": "cap",
    "application/geo+json": "geojson",
    "application/rss+xml": "rss",
}
# Types that say nothing of the format (or none sent): the format is told from the content.
SNIFFED_CONTENT_TYPES = frozenset(
    {"", "application/octet-stream", "application/xml", "text/xml", "application/json"}
)


def parse(
    format_name: str | None,
    data: bytes,
    *,
    level_overrides: Mapping[str, str | None] | None = None,
    max_vertices: int = 50_000,
) -> ParsedFeed:
    """The document in the named format, or (None) in the format its content shows."""
    parser = PARSERS[format_name or sniff_format(data)]
    return parser(data, level_overrides=level_overrides, max_vertices=max_vertices)
