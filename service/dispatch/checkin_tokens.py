"""Signed check-in links (`/c/{token}`): which citizen is asked about which advisory, and until
when. A forged, altered, cut or expired token is refused from the token alone, without a database
look-up.

A token is unpadded URL-safe base64 of

    version (1 byte) | citizen id | advisory id | expiry | tag (12 bytes)

with both ids as unsigned LEB128 (1 byte up to 127, 3 bytes up to about 2 million), the expiry
in Unix seconds as 4 bytes big-endian (until 2106), and the tag HMAC-SHA256 over everything
before it, cut to 96 bits, under a key HKDF derives from the service secret for this purpose
only. That is at most 31 characters while both ids are below 2^21 (about two million) and 42
while both are below 2^49, so the link fits an SMS. The token is signed, not encrypted: whoever
holds the link can read the two ids, as with the alert links (`/a/{id}.{tag}`).
"""

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
# 96 bits, as the alert links: each guess costs a request, so forging one is out of reach.
_TAG_BYTES = 12
_EXPIRY_BYTES = 4
_MAX_ID = 2**63 - 1  # the BigInteger primary keys
_MAX_ID_BYTES = 9  # LEB128 of a 63-bit number
_MIN_BYTES = 1 + 1 + 1 + _EXPIRY_BYTES + _TAG_BYTES
_MAX_BYTES = 1 + 2 * _MAX_ID_BYTES + _EXPIRY_BYTES + _TAG_BYTES
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class CheckinTarget(NamedTuple):
    citizen_id: int
    advisory_id: int


class CheckinTokens:
    """Issues and verifies check-in link tokens under a key derived from the service secret;
    with `previous` secrets (a rotation under way), tokens they signed still verify."""

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        self._keys = [_link_key(each) for each in (secret, *previous)]
        self._key = self._keys[0]

    def issue(self, citizen_id: int, advisory_id: int, expires_at: datetime) -> str:
        """A token valid until expires_at (cut to the second; from then on it is refused)."""
        for name, value in (("citizen_id", citizen_id), ("advisory_id", advisory_id)):
            if isinstance(value, bool) or not 0 <= value <= _MAX_ID:
                raise ValueError(f"{name} must be an integer from 0 to 2^63-1, not {value!r}")
        expiry = math.floor(_aware(expires_at, "expires_at").timestamp())
        if not 0 <= expiry < 2 ** (8 * _EXPIRY_BYTES):
            raise ValueError(f"expires_at out of range (1970 to 2106): {expires_at}")
        body = (
            _VERSION
            + _leb128(citizen_id)
            + _leb128(advisory_id)
            + expiry.to_bytes(_EXPIRY_BYTES, "big")
        )
        return _b64(body + self._tag(body))

    def verify(self, token: str, now: datetime) -> CheckinTarget | None:
        """(citizen id, advisory id) for a genuine token not yet expired at `now`; None for
        anything else, never an exception (now must carry a time zone: that is on the caller)."""
        moment = _aware(now, "now").timestamp()
        raw = _unb64(token)
        if raw is None or not _MIN_BYTES <= len(raw) <= _MAX_BYTES or raw[:1] != _VERSION:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not any(hmac.compare_digest(tag, _tag(key, body)) for key in self._keys):
            return None
        fields = _parse(body[1:])
        if fields is None:
            return None  # only a token we issued gets here, so this is a bug of ours
        citizen_id, advisory_id, expiry = fields
        if moment >= expiry:
            return None
        return CheckinTarget(citizen_id, advisory_id)

    def earlier(self, token: str) -> list[str]:
        """The same token as each previous secret signed it: how a message sent before the
        rotation carries it (a look-up of a send whose outcome was lost finds it so)."""
        raw = _unb64(token)
        if raw is None:
            return []
        body = raw[:-_TAG_BYTES]
        return [_b64(body + _tag(key, body)) for key in self._keys[1:]]

    def _tag(self, body: bytes) -> bytes:
        return _tag(self._key, body)


def _link_key(secret: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"anjeon/checkin-link/v1"
    ).derive(secret)


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone")
    return moment


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_leb128(data: bytes, at: int) -> tuple[int, int] | None:
    """(value, position after it), or None when the bytes are not minimal LEB128 of ≤ 63 bits."""
    value = 0
    for i in range(_MAX_ID_BYTES):
        if at + i >= len(data):
            return None
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and not byte:
                return None  # a trailing zero group: another spelling of a shorter number
            return (value, at + i + 1) if value <= _MAX_ID else None
    return None


def _parse(data: bytes) -> tuple[int, int, int] | None:
    citizen = _read_leb128(data, 0)
    if citizen is None:
        return None
    advisory = _read_leb128(data, citizen[1])
    if advisory is None or len(data) - advisory[1] != _EXPIRY_BYTES:
        return None
    return citizen[0], advisory[0], int.from_bytes(data[advisory[1] :], "big")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(token: str) -> bytes | None:
    # Length first, so a megabyte of garbage costs nothing; then only the URL-safe alphabet, and
    # only the one spelling we write (unused low bits of the last character must be zero).
    if not isinstance(token, str) or not 0 < len(token) <= -(-_MAX_BYTES * 4 // 3):
        return None
    if not _ALPHABET.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == token else None
