"""One reading of CAP for CAP XML and the NWS API's CAP-in-JSON: categories, severities, message
types and status come out the same from both parsers."""

import json

import pytest

from service.advisories import formats
from service.advisories.formats import cap_terms

# OASIS CAP 1.2, §3.2.2 <category>: all twelve values.
CAP_CATEGORIES = [
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
]


def _cap_xml(category="Met", severity="Severe", msg_type="Alert", status="Actual") -> bytes:
    return f"""<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>ID-1</identifier><sender>w-nws.webmaster@noaa.gov</sender>
  <sent>2030-01-01T00:00:00+00:00</sent><status>{status}</status><msgType>{msg_type}</msgType>
  <scope>Public</scope><references>w-nws.webmaster@noaa.gov,ID-0,2029-12-31T00:00:00+00:00</references>
  <info><language>en-US</language><category>{category}</category><event>Storm</event>
    <urgency>Immediate</urgency><severity>{severity}</severity><certainty>Likely</certainty>
    <headline>Storm warning</headline><description>Take shelter.</description>
    <instruction>Not applicable</instruction>
    <area><areaDesc>Somewhere</areaDesc><polygon>38,-120 38,-119 39,-119 38,-120</polygon></area>
  </info></alert>""".encode()


def _nws_json(category="Met", severity="Severe", msg_type="Alert", status="Actual") -> bytes:
    feature = {
        "id": "https://api.weather.gov/alerts/ID-1",
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[-120, 38], [-119, 38], [-119, 39], [-120, 38]]],
        },
        "properties": {
            "@type": "wx:Alert",
            "id": "ID-1",
            "sender": "w-nws.webmaster@noaa.gov",
            "sent": "2030-01-01T00:00:00+00:00",
            "status": status,
            "messageType": msg_type,
            "category": category,
            "severity": severity,
            "event": "Storm",
            "headline": "Storm warning",
            "description": "Take shelter.",
            "instruction": "Not applicable",
            "areaDesc": "Somewhere",
            "references": [
                {"sender": "w-nws.webmaster@noaa.gov", "identifier": "ID-0", "sent": "x"}
            ],
        },
    }
    return json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()


def _both(**values):
    (from_xml,) = formats.parse("cap", _cap_xml(**values)).drafts
    (from_json,) = formats.parse("geojson", _nws_json(**values)).drafts
    return from_xml, from_json


def test_the_table_holds_all_twelve_cap_categories():
    assert sorted(cap_terms.CATEGORIES) == sorted(CAP_CATEGORIES)
    assert set(cap_terms.CATEGORIES.values()) <= {"security", "disaster", "health", "other"}


@pytest.mark.parametrize("category", CAP_CATEGORIES)
def test_both_parsers_map_each_cap_category_alike(category):
    from_xml, from_json = _both(category=category)
    assert from_xml.category == from_json.category == cap_terms.CATEGORIES[category]


def test_infra_transport_rescue_cbrne_are_no_longer_other():
    # The JSON parser's own copy of the table knew only 7 categories.
    for category in ("Infra", "Transport", "Rescue", "CBRNE"):
        assert _both(category=category)[1].category != "other"


@pytest.mark.parametrize("severity", ["Extreme", "Severe", "Moderate", "Minor", "Unknown"])
def test_both_parsers_map_each_severity_alike(severity):
    from_xml, from_json = _both(severity=severity)
    assert from_xml.level == from_json.level


@pytest.mark.parametrize("status", ["Actual", "Exercise", "System", "Test", "Draft"])
def test_only_actual_and_exercise_alert_citizens_from_both(status):
    from_xml, from_json = _both(status=status)
    alerts = status in ("Actual", "Exercise")
    assert from_xml.alerts_citizens == from_json.alerts_citizens == alerts
    assert from_xml.exercise == from_json.exercise == (status == "Exercise")


def test_texts_and_references_alike():
    from_xml, from_json = _both()
    assert from_xml.title["en"] == from_json.title["en"] == "Storm warning"
    assert from_xml.message["en"] == from_json.message["en"] == "Take shelter."
    assert from_xml.references == from_json.references
    assert from_xml.references[0].identifier == "ID-0"


@pytest.mark.parametrize("msg_type", ["Cancel", "Update"])
def test_cancel_and_all_clear_alike(msg_type):
    headline = "All clear" if msg_type == "Update" else "Storm warning"
    xml = _cap_xml(msg_type=msg_type).replace(b"Storm warning", headline.encode())
    nws = _nws_json(msg_type=msg_type).replace(b"Storm warning", headline.encode())
    (from_xml,) = formats.parse("cap", xml).drafts
    (from_json,) = formats.parse("geojson", nws).drafts
    assert from_xml.msg_type == from_json.msg_type == "Cancel"
    assert from_xml.area.is_empty() and from_json.area.is_empty()


@pytest.mark.parametrize("msg_type", ["Ack", "Error"])
def test_ack_and_error_are_rejected_by_both(msg_type):
    xml = formats.parse("cap", _cap_xml(msg_type=msg_type))
    nws = formats.parse("geojson", _nws_json(msg_type=msg_type))
    assert (
        xml.rejected[0].reason
        == nws.rejected[0].reason
        == f"msgType {msg_type} carries no advisory"
    )
