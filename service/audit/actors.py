"""Who acts, as the audit log and an advisory's `issued_by` name them: a staff key by its name,
everything else by a prefix that no staff key's name may take. A key named "feed:USGS" would
have put USGS's name on a consul's alert as its source, and one named "system:expiry" would
pass in the log for the service's own lapsing of a proposal."""

import unicodedata

FEED = "feed:"  # a configured feed's poll: "feed:<name>"; alerts show <name> as their source
SYSTEM = "system:"  # the service's own jobs: "system:expiry", "system:duty-notice"
CLI = "cli:"  # the command line: "cli:<login>" or "cli:<file imported>"
RESERVED = (FEED, SYSTEM, CLI)


def is_reserved(name: str) -> bool:
    """Whether a staff key's name would pass for one of the service's own actors, as people
    read the log too: in any case, with full-width letters or colons read as plain ones (NFKC),
    invisible characters left out, and letters that look Latin read as Latin ("ѕystem:")."""
    plain = unicodedata.normalize("NFKC", name)
    plain = "".join(ch for ch in plain if unicodedata.category(ch) not in ("Cf", "Zs", "Cc"))
    plain = plain.translate(_LOOKALIKES).casefold()
    return plain.startswith(RESERVED)


# Cyrillic and Greek letters drawn as Latin ones.
_LOOKALIKES = str.maketrans(
    "аеорсухѕіјԁԛԝАВЕКМНОРСТХЅІЈοαικνυΟΑΕΙΚΜΝΤΥΧΖΒΡΗ",
    "aeopcyxsijdqwABEKMHOPCTXSIJoaikvuOAEIKMNTYXZBPH",
)
