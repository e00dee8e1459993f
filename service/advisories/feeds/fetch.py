"""Fetching a feed over HTTP: conditional GET, a timeout, a size cap, and a guard against
server-side request forgery. The guard sits where the socket is opened: each connection resolves
the name once, vets every address, and connects to a vetted one, so a DNS server cannot answer
a public address to the check and a private one to the connect (rebinding). Only global unicast
addresses pass; loopback and private networks only for a feed entry with allow_private."""

import ipaddress
import socket
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import httpcore
import httpx

MAX_REDIRECTS = 3
GZIP_MAGIC = b"\x1f\x8b"
# zlib's window bits for each compression we undo: gzip framing; zlib's, or gzip's, for
# deflate (servers send both under that name).
_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": 32 + zlib.MAX_WBITS,
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# What allow_private opens besides loopback: an operator's own networks. ipaddress's
# is_private is wider (documentation, benchmarking, reserved ranges), so they are listed.
_PRIVATE = _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
# Python 3.11.7 calls NAT64, IPv4-compatible and 3fff::/20 addresses global; none is a place
# for a feed. Documentation ranges are listed for a precise reason in the message.
_NAT64, _NAT64_LOCAL = _networks("64:ff9b::/96", "64:ff9b:1::/48")
_IPV4_COMPATIBLE = _networks("::/96")[0]
_DOCUMENTATION = _networks(
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"
)


class FetchError(Exception):
    """The feed could not be fetched; the message says why (kept in the feed's state)."""


@dataclass(frozen=True)
class Fetched:
    status: int  # 200, or 304 when the document has not changed
    body: bytes
    etag: str | None
    last_modified: str | None


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a feed may not be fetched from this address, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address. Mapped and 6to4 ones are judged by it; NAT64 and
        # the deprecated IPv4-compatible form are refused whatever they carry (a translator
        # may reach networks we cannot see).
        mapped = address.ipv4_mapped
        if mapped is not None:
            why = refusal(mapped, allow_private=allow_private)
            return f"IPv4-mapped {mapped}, {why}" if why else None
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address in _NAT64:
            return f"NAT64 for {embedded}"
        if address in _NAT64_LOCAL:
            return "NAT64, local-use prefix"
        if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are judged below
            return f"IPv4-compatible form of {embedded}"
        if address.teredo is not None:
            return "Teredo tunnel"
        if address.sixtofour is not None and refusal(address.sixtofour, allow_private=False):
            return f"6to4 for {address.sixtofour}"
        if address.is_site_local:
            return "site-local"
    if address.is_loopback:
        return None if allow_private else "loopback"
    if any(address in network for network in _PRIVATE):
        return None if allow_private else "private network"
    for test, why in (
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (any(address in network for network in _DOCUMENTATION), "documentation range"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    ):
        if test:
            return why
    return None


def vetted_addresses(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses the host resolves to, once; FetchError if any of them is refused (a name
    that mixes public and private answers is not trusted with either)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(
        dict.fromkeys(
            ipaddress.ip_address(info[4][0])
            for info in infos
            if info[0] in (socket.AF_INET, socket.AF_INET6)
        )
    )
    if not addresses:
        raise FetchError(f"{host} resolves to no IP address")
    for address in addresses:
        why = refusal(address, allow_private=allow_private)
        if why:
            hint = ""
            if not allow_private and refusal(address, allow_private=True) is None:
                hint = "; set allow_private for this feed if that is intended"
            raise FetchError(f"{host} resolves to {address}, a non-public address ({why}){hint}")
    return addresses


def check_destination(url: str, *, allow_private: bool) -> None:
    """FetchError unless the URL is http(s) and its host resolves only to allowed addresses.
    fetch() does not rely on this answer: it vets again as it connects."""
    parts = _checked_url(url)
    vetted_addresses(
        parts.hostname or "",
        parts.port or (443 if parts.scheme == "https" else 80),
        allow_private=allow_private,
    )


def _checked_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http(s) URLs are fetched, not {url!r}")
    return parts


class _VettedBackend(httpcore.NetworkBackend):
    """httpcore's sockets, opened only to addresses vetted here. httpcore hands connect_tcp the
    URL's host name and uses that same name for TLS (SNI and certificate check), so connecting
    to the IP changes nothing but which machine is reached."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        failure: Exception | None = None
        for address in vetted_addresses(host, port, allow_private=self._allow_private):
            try:
                return self._sockets.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # try the host's next address, as a browser would
        assert failure is not None  # vetted_addresses returns at least one address
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("feeds are not fetched over Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


def _client(*, timeout_s: float, allow_private: bool) -> httpx.Client:
    transport = httpx.HTTPTransport()
    # httpx takes no network backend (encode/httpx#3749 proposes it): its transport's httpcore
    # pool is rebuilt around ours. test_ssrf's rebinding test fails if this stops taking effect.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=_VettedBackend(allow_private=allow_private),
    )
    # An explicit transport also turns off HTTP(S)_PROXY from the environment: a proxy would
    # resolve the name itself, out of the guard's reach.
    return httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=False)


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
    # The body, and each redirect, within timeout_s of the start: httpx's timeout holds for
    # each read, and a probe's server sending a byte every 0.2 s held a 0.5 s poll for as long
    # as it chose. (Headers trickled a byte at a time are bounded only by httpx's per read.)
    deadline = time.monotonic() + timeout_s
    with _client(timeout_s=timeout_s, allow_private=allow_private) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _within(deadline, timeout_s)
            _checked_url(url)  # every hop; its address is vetted when its connection opens
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return _read(response, max_bytes, deadline=deadline, timeout_s=timeout_s)
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out after {timeout_s} s") from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _read(
    response: httpx.Response, max_bytes: int, *, deadline: float, timeout_s: float
) -> Fetched:
    if response.status_code == 304:
        body = b""
    elif response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code}")
    else:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"response is {declared} bytes, over the {max_bytes}-byte cap")
        inflater = _inflater(response.headers.get("content-encoding", ""))
        chunks, size, received = [], 0, False
        for raw in response.iter_raw():
            received = received or bool(raw)
            _within(deadline, timeout_s)
            try:
                # Inflated by us, at most to the cap: httpx inflates a whole chunk at once, and
                # "gzip, gzip" (which it honours) made 825 bytes 400 MB in a probe's run.
                chunk = inflater.decompress(raw, max_bytes + 1 - size) if inflater else raw
            except zlib.error as exc:
                raise FetchError(f"not readable as its Content-Encoding: {exc}") from exc
            size += len(chunk)
            if size > max_bytes:  # counted after decompression: a gzip bomb too
                raise FetchError(f"response is over the {max_bytes}-byte cap")
            chunks.append(chunk)
        if inflater is not None and received and not inflater.eof:
            raise FetchError("a truncated compressed response")
        body = b"".join(chunks)
    return Fetched(
        status=response.status_code,
        body=body,
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
    )


def _within(deadline: float, timeout_s: float) -> None:
    if time.monotonic() > deadline:
        raise FetchError(f"took longer than {timeout_s} s in all")


def _inflater(header: str) -> Any:
    """What undoes the response's Content-Encoding: nothing, or one gzip or deflate. As httpx
    did, names it does not know ("identity", a server's "UTF-8") are passed over; two
    compressions stacked are refused: "gzip, gzip" made 825 bytes 400 MB in a probe's run."""
    codings = [c for c in (part.strip().lower() for part in header.split(",")) if c in _WBITS]
    if not codings:
        return None
    if len(codings) > 1:
        raise FetchError(f"Content-Encoding {header!r}: one compression at most")
    return zlib.decompressobj(wbits=_WBITS[codings[0]])


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
    inflater = zlib.decompressobj(wbits=_WBITS["gzip"])
    try:
        document = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(f"not a readable gzip file: {exc}") from exc
    if len(document) > max_bytes:
        raise FetchError(f"over the {max_bytes}-byte cap once decompressed")
    if not inflater.eof:
        raise FetchError("a truncated gzip file")
    return document
