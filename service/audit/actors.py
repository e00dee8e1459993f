"""Who acts, as the audit log and an advisory's `issued_by` name them: a staff key by its name,
everything else by a prefix that no staff key's name may take. A key named "feed:USGS" would
have put USGS's name on a consul's alert as its source, and one named "system:expiry" would
pass in the log for the service's own lapsing of a proposal."""

import unicodedata

from service.schema_rules import INVISIBLE

FEED = "feed:"  # a configured feed's poll: "feed:<name>"; alerts show <name> as their source
SYSTEM = "system:"  # the service's own jobs: "system:expiry", "system:duty-notice"
CLI = "cli:"  # the command line: "cli:<login>" or "cli:<file imported>"
RESERVED = (FEED, SYSTEM, CLI)


def is_reserved(name: str) -> bool:
    """Whether a staff key's name would pass for one of the service's own actors, as people
    read the log too (as_read, _skeleton)."""
    return as_read(name).startswith(RESERVED) or _skeleton(name).startswith(RESERVED)


def reads_alike(one: str, other: str) -> bool:
    """Whether two names read as one in the log: the same as read, or drawn alike in most
    fonts ("aIice", "a1ice" and "alice"; "b0b" and "bob")."""
    return as_read(one) == as_read(other) or _skeleton(one) == _skeleton(other)


def _skeleton(name: str) -> str:
    # Before case folds them: a capital I is drawn as a small l, not as a small i.
    return as_read(name.translate(_DRAWN_ALIKE))


def as_read(name: str) -> str:
    """A name as people read it in the log: in any case, with full-width letters or colons
    read as plain ones (NFKC), invisible characters and spaces left out, and letters that look
    Latin read as Latin ("ѕystem:", "bоb"). Two keys' names must not read the same."""
    plain = unicodedata.normalize("NFKC", name)
    plain = "".join(
        ch
        for ch in plain
        if unicodedata.category(ch) not in ("Cf", "Zs", "Cc") and not INVISIBLE.match(ch)
    )
    # Accents left out ("alíce" reads as "alice"); Hangul decomposed and composed again.
    bare = "".join(
        ch for ch in unicodedata.normalize("NFD", plain) if unicodedata.category(ch) != "Mn"
    )
    return unicodedata.normalize("NFC", bare).translate(_LOOKALIKES).casefold()


# Cyrillic, Greek, Armenian, IPA and small-capital letters drawn as Latin ones, and Latin
# letters with a stroke (which no decomposition takes off). A hand-kept table: the common
# look-alikes, not the whole of Unicode's confusables (UTS #39).
_LOOKALIKES = str.maketrans(
    "аеорсухѕіјԁԛԝһӏӀԛАВЕКМНОРСТХЅІЈοαικνυΟΑΕΙΚΜΝΤΥΧΖΒΡΗոսɑɡıȷɩłŁđĐøØħƀᴏᴄᴠᴡᴢ",
    "aeopcyxsijdqwhlIqABEKMHOPCTXSIJoaikvuOAEIKMNTYXZBPHnuagijilLdDoOhbocvwz",
)
# Drawn alike in most fonts, though not the same letter read aloud.
_DRAWN_ALIKE = str.maketrans("I1|0", "lllo")
