"""XML from outside, parsed safely: no DTDs, no entities, no external references (defusedxml),
bytes in (the document's own encoding declaration is honoured), namespaces stripped."""

import codecs
import re
from io import BytesIO
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring, iterparse

from service.errors import DomainError, FieldError


class UnreadableDocument(DomainError):
    status = 400
    title = "Unreadable document"
    slug = "unreadable-document"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[FieldError("document", detail)])


class InvalidDocument(UnreadableDocument):
    """Well-formed, but not the format it was sent as (no CAP <identifier>, not a
    FeatureCollection, …)."""

    status = 422
    title = "Invalid document"
    slug = "invalid-document"


_DECLARED = re.compile(rb"\s*<\?xml\s[^>\x80-\xff]*?\bencoding\s*=\s*[\"']([A-Za-z][\w.-]*)[\"']")
# Expat reads these itself, and any single-byte codec through Python's (see _single_byte).
_EXPAT_NATIVE = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "iso8859-1", "ascii"})
# Multi-byte encodings expat refuses, decoded here, each label read as browsers read it (WHATWG
# Encoding Standard): Korean servers label CP949 text "EUC-KR", Japanese ones CP932 "Shift_JIS".
_DECODED_AS = {
    "euc_kr": "cp949",
    "cp949": "cp949",
    "iso2022_kr": "iso2022_kr",
    "shift_jis": "cp932",
    "cp932": "cp932",
    "euc_jp": "euc_jp",
    "iso2022_jp": "iso2022_jp",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "gb18030": "gb18030",
    "big5": "big5hkscs",
    "big5hkscs": "big5hkscs",
}


def parse_xml(data: bytes) -> Element:
    """The root element with namespace prefixes removed from every tag."""
    try:
        root = fromstring(
            _readable(data), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise _refused(exc) from exc
    except ParseError as exc:
        raise UnreadableDocument(f"not well-formed XML: {exc}") from exc
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def root_tag(data: bytes) -> str:
    """The root element's name as '{namespace}local', read without parsing the rest."""
    source = BytesIO(_readable(data))
    try:
        for _event, element in iterparse(source, events=("start",), forbid_dtd=True):
            return element.tag
    except DefusedXmlException as exc:
        raise _refused(exc) from exc
    except ParseError as exc:
        raise UnreadableDocument(f"not well-formed XML: {exc}") from exc
    raise UnreadableDocument("not well-formed XML: no root element")


def text_of(element: Element | None, path: str, default: str = "") -> str:
    if element is None:
        return default
    found = element.find(path)
    if found is None or found.text is None:
        return default
    return found.text.strip()


def _refused(exc: DefusedXmlException) -> UnreadableDocument:
    return UnreadableDocument(
        f"refused: the document uses {type(exc).__name__.removesuffix('Forbidden')} "
        "(DTDs, entities and external references are not accepted)"
    )


def _readable(data: bytes) -> bytes:
    """The document as expat can read it: multi-byte East Asian encodings turned into UTF-8 (the
    declaration rewritten to match); an encoding that cannot be read safely is refused."""
    declared = _DECLARED.match(data)
    if declared is None:
        return data  # UTF-8, or a BOM / UTF-16 that expat detects itself
    label = declared.group(1).decode("ascii")
    try:
        name = codecs.lookup(label).name
    except LookupError:
        raise UnreadableDocument(f"the document declares an unknown encoding {label!r}") from None
    if name in _DECODED_AS:
        try:
            text = data.decode(_DECODED_AS[name])
        except UnicodeDecodeError as exc:
            raise UnreadableDocument(
                f"the document is not valid {label}: {exc.reason} at byte {exc.start}"
            ) from exc
        # The declaration is ASCII (_DECLARED), so its offsets are the same in the text.
        return (text[: declared.start(1)] + "UTF-8" + text[declared.end(1) :]).encode()
    if name in _EXPAT_NATIVE or _single_byte(name):
        return data
    # UTF-7 and the like: the same bytes read as different markup by different decoders.
    raise UnreadableDocument(
        f"the document declares encoding {label!r}, which cannot be decoded safely: "
        "send UTF-8 (or EUC-KR, Shift_JIS, ISO-8859-x)"
    )


def _single_byte(codec: str) -> bool:
    """What expat reads through Python's codec: each of the 256 bytes one character."""
    try:
        return len(bytes(range(256)).decode(codec, errors="replace")) == 256
    except (LookupError, ValueError):  # not a text encoding ('base64'), or no 'replace'
        return False
