"""Which alert goes first: the urgency classes of the alert ledger, lowest first.

Each row carries its class (`alert.priority`), set when it is enqueued, so the dispatcher's
claim reads one index in (class, age) order and joins nothing. So that routine alerts are never
starved, a share of every claimed batch goes to the oldest due rows whatever their class."""

from typing import Final

from service.advisories.levels import is_urgent

# Reserved for check-in escalations and help notices to duty staff (issue #12): above any
# advisory, because each one is about a person who may be in danger now.
CHECK_IN: Final = 0
_BY_LEVEL: Final = {"4": 1, "special": 1, "3": 2, "2": 3, "1": 4}
# The all-clear of a level 1-2 advisory: nothing anybody does depends on it soon.
ROUTINE_ALL_CLEAR: Final = 5
CLASSES: Final = (CHECK_IN, 1, 2, 3, 4, ROUTINE_ALL_CLEAR)
# Check-ins and levels 3, 4 and special (and their all-clears): while a channel's provider is
# down, these go out on the citizen's other channel rather than wait for it.
URGENT: Final = (CHECK_IN, _BY_LEVEL["4"], _BY_LEVEL["3"])
# What a writer that names no class gets (the column's server default): level 1's.
DEFAULT: Final = _BY_LEVEL["1"]
# One row in this many of each claimed batch (at least one, when a batch holds two or more)
# goes to the oldest due rows: under any flood of urgent alerts a routine one still moves.
OLDEST_SHARE: Final = 10


def of_level(level: str) -> int:
    """The class of an alert of an advisory at this level ("1".."4", "special")."""
    return _BY_LEVEL[level]


def of_roll_call(level: str, *, asks: bool) -> int:
    """The class of "are you safe?" asked in a round staff start, or asked again: above any
    advisory when the advisory asks by itself (`asks`: levels 3, 4, special, CAP Extreme), as
    people may be in danger now; else the advisory's own class, so a roll call on a level 1-2
    advisory never holds up a level 4 (a probe queued such rounds ahead of every alert)."""
    return CHECK_IN if asks else of_level(level)


def told_ahead(cls: int) -> int:
    """The class of an alert told ahead (alert.told_ahead: its citizen is reached only through
    a stay not begun, or the advisory is not in effect yet): one class after those there now,
    so that in a burst the people in danger now are told first. A level 4 told ahead goes with
    a level 3 there now, and still goes on the other channel while a provider is down."""
    return min(cls + 1, ROUTINE_ALL_CLEAR)


def of_cancellation(level: str) -> int:
    """The class of the all-clear of an advisory whose last level was `level`. Calling off a
    level 3, 4 or special advisory goes as urgently as the advisory did: people leave a country
    or give up a journey on it, and a false alarm left standing does harm (Hawaii's false
    missile alert of 2018 was corrected 38 minutes late). A level 1-2 all-clear goes last."""
    return of_level(level) if is_urgent(level) else ROUTINE_ALL_CLEAR


def oldest_share(limit: int) -> int:
    """How many rows of a batch of `limit` are the oldest due ones, whatever their class."""
    if limit < 2:
        return 0
    return max(1, limit // OLDEST_SHARE)
