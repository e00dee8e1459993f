"""Telling a document's format from its content, for `anjeon ingest FILE` without --format and
imports sent with a generic content type. Only what a format's own markers say decides."""

import codecs

from service.advisories.formats.common import load_json
from service.advisories.formats.safe_xml import InvalidDocument, root_tag

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1."  # 1.0 to 1.2
# Fields of a getTravelAlarmList2 row.
_MOFA_FIELDS = frozenset({"alarm_lvl", "country_iso_alp2", "region_ty"})


def sniff_format(data: bytes) -> str:
    """'cap', 'rss', 'geojson' or 'mofa'; InvalidDocument (naming what was seen) otherwise.
    Hostile or undecodable XML is refused here as it is by the parsers."""
    start = _first_character(data)
    if start == "<":
        return _xml_format(data)
    if start in ("{", "["):
        return _json_format(load_json(data))
    raise _unknown("it is neither XML nor JSON")


def _first_character(data: bytes) -> str:
    head = data[:512]
    for bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if head.startswith(bom):
            return head.decode("utf-16", errors="ignore").lstrip()[:1]
    return head.removeprefix(codecs.BOM_UTF8).decode("latin-1").lstrip()[:1]


def _xml_format(data: bytes) -> str:
    namespace, _, name = root_tag(data).rpartition("}")
    namespace = namespace.lstrip("{")
    if name == "alert" and namespace.startswith(CAP_NAMESPACE):
        return "cap"
    if name == "rss" and not namespace:
        return "rss"
    seen = f"<{name}> in namespace {namespace}" if namespace else f"<{name}>"
    raise _unknown(f"XML with root {seen}, neither a CAP 1.x <alert> nor RSS 2.0 <rss>")


def _json_format(document: object) -> str:
    if isinstance(document, dict):
        if document.get("type") == "FeatureCollection":
            return "geojson"  # USGS summaries and NWS alert lists alike
        rows = document.get("data")
        # resultCode alone is enough: an empty list, or an error the parser will report
        if "resultCode" in document or (
            isinstance(rows, list)
            and any(isinstance(row, dict) and _MOFA_FIELDS & row.keys() for row in rows)
        ):
            return "mofa"
    raise _unknown("JSON that is neither a GeoJSON FeatureCollection nor a MOFA envelope")


def _unknown(why: str) -> InvalidDocument:
    return InvalidDocument(
        f"cannot tell the document's format: {why}; name it (cap, geojson, rss or mofa)"
    )
