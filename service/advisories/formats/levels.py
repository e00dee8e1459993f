"""How each feed's own scale maps onto the Korean travel-alert levels (1 travel caution,
2 travel restraint, 3 departure recommended, 4 travel ban, special). Each table can be
overridden per feed in config/feeds.toml (`levels = { Severe = "3" }`); None means "do not
create an advisory". The README documents these tables."""

from collections.abc import Mapping

# CAP <severity>. Weather and hazard agencies never decide a travel ban: at most 3.
CAP_SEVERITY: dict[str, str | None] = {
    "Extreme": "3",
    "Severe": "2",
    "Moderate": "1",
    "Minor": "1",
    "Unknown": "1",
}

# USGS PAGER alert colour (estimated impact). No colour yet (a fresh event): 1.
USGS_PAGER: dict[str, str | None] = {
    "none": "1",
    "green": "1",
    "yellow": "2",
    "orange": "3",
    "red": "special",
}

# GDACS alert level. Green means little humanitarian impact: no advisory by default.
GDACS_ALERT: dict[str, str | None] = {"Green": None, "Orange": "2", "Red": "3"}

# US State Department advisory levels. Level 1 ("exercise normal precautions") is no warning;
# Level 4 ("do not travel") is advice, not a legal travel ban like the Korean level 4.
US_STATE_DEPT: dict[str, str | None] = {"1": None, "2": "1", "3": "2", "4": "3"}

# MOFA's travel-alarm API is the Korean scale itself.
MOFA: dict[str, str | None] = {"1": "1", "2": "2", "3": "3", "4": "4"}


def level_for(
    table: Mapping[str, str | None], key: str, overrides: Mapping[str, str | None] | None
) -> str | None:
    merged = {**table, **(overrides or {})}
    if key in merged:
        return merged[key]
    return merged.get("default", "1")
