"""Fetching a feed over HTTP: conditional GET, a timeout, a size cap, and no requests to
loopback, private or link-local addresses unless the feed entry allows it (SSRF guard)."""

import ipaddress
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

MAX_REDIRECTS = 3
GZIP_MAGIC = b"\x1f\x8b"


class FetchError(Exception):
    """The feed could not be fetched; the message says why (kept in the feed's state)."""


@dataclass(frozen=True)
class Fetched:
    status: int  # 200, or 304 when the document has not changed
    body: bytes
    etag: str | None
    last_modified: str | None


def check_destination(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http(s) URLs are fetched, not {url!r}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {parts.hostname}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise FetchError(
                f"{parts.hostname} resolves to {address}, a non-public address; "
                "set allow_private for this feed if that is intended"
            )


def fetch(
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    timeout_s: float,
    max_bytes: int,
    allow_private: bool,
) -> Fetched:
    headers = {"User-Agent": "anjeon-feed-poller/1", "Accept-Encoding": "gzip"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_destination(url, allow_private=allow_private)  # again on every redirect
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return _read(response, max_bytes)
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out after {timeout_s} s") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _read(response: httpx.Response, max_bytes: int) -> Fetched:
    if response.status_code == 304:
        body = b""
    elif response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code}")
    else:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"response is {declared} bytes, over the {max_bytes}-byte cap")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:  # also caps a gzip bomb: counted after decompression
                raise FetchError(f"response is over the {max_bytes}-byte cap")
            chunks.append(chunk)
        body = b"".join(chunks)
    return Fetched(
        status=response.status_code,
        body=body,
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
    )


def read_file(path: str | Path, *, max_bytes: int) -> bytes:
    """A feed document from disk, within the size cap; a gzip file (an archived capture) is
    decompressed, and the cap holds for what it holds too."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise FetchError(exc.strerror or str(exc)) from exc
    if len(data) > max_bytes:
        raise FetchError(f"file is over the {max_bytes}-byte cap")
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        document = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(f"not a readable gzip file: {exc}") from exc
    if len(document) > max_bytes:
        raise FetchError(f"over the {max_bytes}-byte cap once decompressed")
    if not inflater.eof:
        raise FetchError("a truncated gzip file")
    return document
