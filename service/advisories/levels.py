"""The Korean travel-alert scale: the one home of level names and of what a level implies."""

from typing import Final

# Stored as text: "1".."4" and "special".
LEVELS: Final = ("1", "2", "3", "4", "special")
# Korean and English names of each level.
LEVEL_NAMES: Final = {
    "1": ("여행유의", "travel caution"),
    "2": ("여행자제", "travel restraint"),
    "3": ("출국권고", "departure recommended"),
    "4": ("여행금지", "travel ban"),
    "special": ("특별여행주의보", "special travel advisory"),
}
# Levels that tell people to leave or not to come. These reach citizens known only by their
# country even when the advisory covers part of it (missing someone is worse than over-telling).
URGENT: Final = frozenset({"3", "4", "special"})


def is_urgent(level: str) -> bool:
    return level in URGENT


def asks_checkin(level: str, *, severity: str = "") -> bool:
    """Whether its alerts ask "are you safe?": levels 3, 4 and special, and a CAP alert of
    severity Extreme whatever level a feed's table gave it."""
    return is_urgent(level) or severity == "Extreme"


def goes_at_once(level: str, *, severity: str = "", urgency: str = "") -> bool:
    """Whether its alerts ignore the citizen's quiet hours: what asks for a check-in, and a CAP
    alert of urgency Immediate (act now). Levels 1-2 wait for the morning."""
    return asks_checkin(level, severity=severity) or urgency == "Immediate"
