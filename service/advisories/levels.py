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
