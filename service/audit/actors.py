"""Who acts, as the audit log and an advisory's `issued_by` name them: a staff key by its name,
everything else by a prefix that no staff key's name may take. A key named "feed:USGS" would
have put USGS's name on a consul's alert as its source, and one named "system:expiry" would
pass in the log for the service's own lapsing of a proposal."""

FEED = "feed:"  # a configured feed's poll: "feed:<name>"; alerts show <name> as their source
SYSTEM = "system:"  # the service's own jobs: "system:expiry", "system:duty-notice"
CLI = "cli:"  # the command line: "cli:<login>" or "cli:<file imported>"
RESERVED = (FEED, SYSTEM, CLI)


def is_reserved(name: str) -> bool:
    """Whether a staff key's name would pass for one of the service's own actors (in any case:
    people read the log too)."""
    return name.strip().casefold().startswith(RESERVED)
