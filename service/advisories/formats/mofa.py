"""The Korean MOFA travel-alarm API (TravelAlarmService2/getTravelAlarmList2) to drafts.

Its levels are the Korean scale itself. One advisory per country and region type: 전체 (the
whole country) is revised when its level changes; each 일부 (part of a country) row is kept per
level with its remark. We hold no polygons for those parts, so a partial advisory covers the
whole country and says which part in its text and notes: over-telling beats missing someone."""

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from service.advisories.drafts import AdvisoryDraft, ExternalKey, ParsedFeed
from service.advisories.formats import levels
from service.advisories.formats.common import (
    ItemRejected,
    ItemSkipped,
    json_text,
    load_json,
    plain_text,
    read_item,
)
from service.advisories.formats.safe_xml import InvalidDocument
from service.advisories.levels import LEVEL_NAMES
from service.geo import countries
from service.geo.areas import Area

KST = timezone(timedelta(hours=9))
# The row fields read, all text (the API sends numbers as text too).
_FIELDS = (
    "country_iso_alp2",
    "alarm_lvl",
    "region_ty",
    "remark",
    "country_nm",
    "country_eng_nm",
    "written_dt",
)
WHOLE, PART = "전체", "일부"


def parse_mofa(
    data: bytes,
    *,
    level_overrides: Mapping[str, str | None] | None = None,
    max_vertices: int = 50_000,
) -> ParsedFeed:
    envelope = load_json(data)
    if not isinstance(envelope, dict):
        raise InvalidDocument("expected the getTravelAlarmList2 envelope, a JSON object")
    if str(envelope.get("resultCode", "00")) not in ("0", "00"):
        raise InvalidDocument(f"the API answered an error: {envelope.get('resultMsg')}")
    rows = envelope.get("data")
    if not isinstance(rows, list):
        raise InvalidDocument("expected the getTravelAlarmList2 envelope with a data list")
    result = ParsedFeed(whole=_count(envelope, "totalCount") <= len(rows))
    for i, row in enumerate(rows):
        code = row.get("country_iso_alp2") if isinstance(row, dict) else None
        label = f"mofa {code} row {i}" if isinstance(code, str) else f"row {i}"
        read_item(result, label, _draft, row, level_overrides)
    return result


def _count(envelope: dict, key: str) -> int:
    """A count the envelope states (0 when absent or unreadable: nothing more to read; the
    API writes numbers as text, "139" or "139.0")."""
    try:
        return int(float(str(envelope.get(key) or 0)))
    except (ValueError, OverflowError):
        return 0


def _draft(raw: object, overrides: Mapping[str, str | None] | None) -> AdvisoryDraft:
    if not isinstance(raw, dict):
        raise ItemRejected("a row is a JSON object")
    row = {key: json_text(raw, key) for key in _FIELDS}
    code = countries.normalise_code(str(row.get("country_iso_alp2") or ""))
    if code is None:
        raise ItemRejected(f"unknown country code {row.get('country_iso_alp2')!r}")
    raw_level = str(row.get("alarm_lvl") or "").strip()
    if raw_level not in levels.MOFA:
        raise ItemSkipped(f"no travel alarm level ({raw_level or 'empty'})")
    level = levels.level_for(levels.MOFA, raw_level, overrides)
    if level is None:
        raise ItemSkipped(f"level {raw_level}: no advisory")
    region = (row.get("region_ty") or WHOLE).strip()
    remark = plain_text(row.get("remark") or "", 500)
    name_ko = row.get("country_nm") or code
    by_code = {c.code: c.name for c in countries.boundaries().countries}
    name_en = row.get("country_eng_nm") or by_code.get(code, code)
    ko_name, en_name = LEVEL_NAMES[raw_level]
    where_ko = f" ({remark})" if region == PART and remark else ""
    where_en = f" (part of the country: {remark})" if region == PART and remark else ""
    written = str(row.get("written_dt") or "")
    try:
        effective = datetime.fromisoformat(written[:10]).replace(tzinfo=KST)
    except ValueError as exc:
        raise ItemRejected(f"unreadable written_dt {written!r}") from exc
    identifier = f"{code}:{WHOLE}" if region != PART else f"{code}:{PART}:{raw_level}"
    notes = (f"{PART} (part of the country): {remark}",) if region == PART else ()
    return AdvisoryDraft(
        level=level,
        category="security",
        title={
            "ko": f"{name_ko} 여행경보 {raw_level}단계({ko_name}){where_ko}",
            "en": f"{name_en}: travel alert level {raw_level} ({en_name}){where_en}",
        },
        message={
            "ko": f"외교부는 {name_ko}{where_ko}에 여행경보 {raw_level}단계({ko_name})를 "
            "발령하고 있습니다. 해외안전여행 누리집(0404.go.kr)을 확인하십시오.",
            "en": f"Korea's Ministry of Foreign Affairs has a level {raw_level} travel alert "
            f"({en_name}) for {name_en}{where_en}. See www.0404.go.kr.",
        },
        area=Area(countries=(code,), description=f"{name_ko} {region}", notes=notes),
        effective=effective,
        expires=None,
        source="mofa",
        external=ExternalKey("0404.go.kr", identifier),
        label=f"mofa {code} {region} level {raw_level}",
        revisable=True,
    )
