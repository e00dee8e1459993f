"""Safety check-in ("are you safe?"): reading SMS replies and signing check-in links."""
