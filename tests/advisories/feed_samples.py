"""The real feed samples in tests/data/feeds (sources and licences in its SOURCES.md); read,
never edited: a test that needs a variant derives it."""

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

FEEDS = Path(__file__).resolve().parents[1] / "data" / "feeds"


def sample(relative: str) -> bytes:
    path = FEEDS / relative
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def current_cap() -> bytes:
    """The OASIS thunderstorm CAP sample, moved to tomorrow so that it is current."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    return sample("cap/oasis-cap12-appendixA2-thunderstorm-polygon.xml").replace(
        b"2003-06-17", tomorrow.encode()
    )


_MOFA_NAMES = {
    "alarm_level": "alarm_lvl",
    "country_code": "country_iso_alp2",
    "region_type": "region_ty",
    "map_url": "dang_map_download_url",
    "flag_url": "flag_download_url",
    "country_name": "country_nm",
    "continent_name": "continent_nm",
}


def mofa_envelope() -> bytes:
    """The getTravelAlarmList2 envelope rebuilt from the derived fixture (field names restored)."""
    rows = json.loads(sample("kr-mofa/tripguard-alerts_seed-derived-from-TravelAlarmService2.json"))
    data = [{_MOFA_NAMES.get(k, k): v for k, v in row["fields"].items()} for row in rows]
    envelope = {
        "resultCode": "00",
        "resultMsg": "NORMAL SERVICE.",
        "numOfRows": len(data),
        "pageNo": 1,
        "totalCount": len(data),
        "currentCount": len(data),
        "data": data,
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


def mofa_rows(*rows: dict, total: int | str | None = None) -> bytes:
    """A getTravelAlarmList2 envelope of the given rows, each written on 2026-01-01; `total`,
    its totalCount, when it is one page of several."""
    data = [{"written_dt": "2026-01-01", **row} for row in rows]
    envelope = {"resultCode": "00", "totalCount": len(data) if total is None else total}
    return json.dumps({**envelope, "data": data}, ensure_ascii=False).encode()
