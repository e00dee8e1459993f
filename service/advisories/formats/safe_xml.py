"""XML from outside, parsed safely: no DTDs, no entities, no external references (defusedxml),
bytes in (the document's own encoding declaration is honoured), namespaces stripped."""

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from service.errors import DomainError


class UnreadableDocument(DomainError):
    status = 400
    title = "Unreadable document"
    slug = "unreadable-document"


class InvalidDocument(UnreadableDocument):
    """Well-formed, but not the format it was sent as (no CAP <identifier>, not a
    FeatureCollection, …)."""

    status = 422
    title = "Invalid document"
    slug = "invalid-document"


def parse_xml(data: bytes) -> Element:
    """The root element with namespace prefixes removed from every tag."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UnreadableDocument(
            f"refused: the document uses {type(exc).__name__.removesuffix('Forbidden')} "
            "(DTDs, entities and external references are not accepted)"
        ) from exc
    except ParseError as exc:
        raise UnreadableDocument(f"not well-formed XML: {exc}") from exc
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def text_of(element: Element | None, path: str, default: str = "") -> str:
    if element is None:
        return default
    found = element.find(path)
    if found is None or found.text is None:
        return default
    return found.text.strip()
