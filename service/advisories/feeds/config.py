"""config/feeds.toml: the feeds to poll. Feed URLs come only from here (never from a request)."""

import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.advisories.formats import PARSERS


class FeedConfigError(ValueError):
    pass


class Feed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str | None = None
    path: str | None = None
    format: Literal["cap", "geojson", "rss", "mofa"]
    interval_s: int = Field(300, ge=30)
    enabled: bool = True
    # Only for feeds an operator runs on their own network (and the tests' loopback server).
    allow_private: bool = False
    levels: dict[str, str | None] = {}
    # Whether its advisories wait for a person: never, always, or at levels 3, 4 and special.
    approval: Literal["auto", "required", "level3+"] = "level3+"
    # A document unchanged this long (the same bytes, or 304 Not Modified) marks the feed
    # stale: for an upstream known to change at least that often (one that stamps each
    # document with the time it was made), whose freezing would otherwise look healthy.
    stale_after_s: int | None = Field(None, ge=60)

    @property
    def shown_source(self) -> str:
        """Where it is read from, as staff see it: the host and path, never a user and
        password in the URL, nor its query (an api_key=…): every role may list the feeds (a
        probe read a feed's password with a viewer's key)."""
        if self.url is None:
            return self.path or ""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6, bracketed again
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        query = "?…" if parts.query else ""
        return f"{parts.scheme}://{host}{port}{parts.path}{query}"

    @model_validator(mode="after")
    def _one_source(self) -> "Feed":
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of url, path")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError("url must be http(s)")
        if self.url is not None:
            try:
                urlsplit(self.url).port  # noqa: B018 - raises on a port out of range or not a number
            except ValueError as exc:
                raise ValueError(f"url: {exc}") from exc
        if self.format not in PARSERS:
            raise ValueError(f"unknown format {self.format}")
        if self.stale_after_s is not None and self.stale_after_s < 2 * self.interval_s + 300:
            # Two polls and five minutes, as AnjeonFeedFailing waits: a change is stamped with
            # its poll's start, and a late or handed-over poll must not make a feed stale.
            raise ValueError("stale_after_s must be at least 2 × interval_s + 300")
        return self


def load_feeds(path: Path) -> list[Feed]:
    """The feeds in a TOML file ([[feed]] tables; a file without any means no feeds). A file
    that is not there is an error: an operator's mistyped ANJEON_FEEDS_FILE ran the service
    with no feeds, no warning, and no feed alert that could fire (a review)."""
    if not path.is_file():
        raise FeedConfigError(
            f"{path}: no such file (ANJEON_FEEDS_FILE); for no feeds, point it at an empty file"
        )
    try:
        document = tomllib.loads(path.read_text())
        feeds = [Feed.model_validate(entry) for entry in document.get("feed", [])]
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise FeedConfigError(f"{path}: {exc}") from exc
    names = [f.name for f in feeds]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise FeedConfigError(f"{path}: feed names repeat: {', '.join(sorted(duplicates))}")
    return feeds
