"""Personal data at rest: AES-GCM encryption and keyed look-up hashes, derived from the service
secret, and the data secrets a rotation moves them to (docs/privacy.md, "Rotating keys")."""

import hashlib
import hmac
import logging
import os
import re
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.metrics import UNREADABLE_VALUES

# Version 1: nonce | ciphertext, under the one key there was. Version 2 names the key that
# sealed it (a fingerprint, not the key), so a rotation can tell what is left to seal again.
_FORMAT_V1 = b"\x01"
_FORMAT_V2 = b"\x02"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12

# What a person is shown for a value no listed data secret opens (a secret dropped before
# `anjeon reseal` was done): the rest of the record, the list or the duty notice still shows.
UNREADABLE = "[unreadable]"

log = logging.getLogger("anjeon.privacy")


class _UnopenedLines:
    """One log line per field and fingerprint every REPEAT_S, with how many reads it stands
    for: a staff list refreshed during a key problem read each value again and wrote a line
    each time. Every read is counted (anjeon_unreadable_values_total)."""

    REPEAT_S = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[tuple[str, str | None], tuple[float, int]] = {}
        self.clock = time.monotonic

    def note(self, field: str, named: str | None, **context: object) -> None:
        UNREADABLE_VALUES.labels(field=field).inc()
        now = self.clock()
        with self._lock:
            logged_at, unlogged = self._since.get((field, named), (-self.REPEAT_S, 0))
            if now - logged_at < self.REPEAT_S:
                self._since[(field, named)] = (logged_at, unlogged + 1)
                return
            self._since[(field, named)] = (now, 0)
        log.error(
            "a sealed value no listed data secret opens (see anjeon reseal --check)",
            extra={"field": field, "sealed_by": named, "unlogged_before": unlogged, **context},
        )


_UNOPENED = _UnopenedLines()
# Every sealed field's count from 0: a rate over it then sees the first unreadable value too.
for _field in ("name", "phone", "email", "checkin-note"):
    UNREADABLE_VALUES.labels(field=_field)


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class _DataKeys:
    """What one data secret gives: the key that seals personal data, and those that sign
    check-in links and registration proofs."""

    def __init__(self, secret: bytes) -> None:
        self.key_id = _derive(secret, b"anjeon/pii-key-id/v1")[:_KEY_ID_BYTES]
        self.aead = AESGCM(_derive(secret, b"anjeon/pii-encryption/v1"))
        self.link = _derive(secret, b"anjeon/checkin-link-key/v1")
        self.proof = _derive(secret, b"anjeon/registration-proof/v1")


class PersonalDataVault:
    """Seals personal fields. Separate keys for encryption and look-ups, derived by HKDF,
    so a leaked look-up key cannot decrypt anything.

    `secret` gives the look-up hashes (contacts, codes, alert references); `data_secrets`,
    newest first, the sealing and signing keys (by default `secret` alone). The first seals
    and signs; the others, kept while a rotation runs, still open what they sealed and still
    verify what they signed ("Rotating the secret key" in docs/privacy.md)."""

    def __init__(self, secret: bytes, data_secrets: Sequence[bytes] = ()) -> None:
        self._lookup_key = _derive(secret, b"anjeon/pii-lookup/v1")
        self._keys = [_DataKeys(each) for each in dict.fromkeys(data_secrets or [secret])]
        self._by_id = {keys.key_id: keys for keys in reversed(self._keys)}
        self._aead = self._keys[0].aead
        # The signing keys of check-in links (service/dispatch/checkin_tokens.py) and of
        # registration proofs of work (service/citizens/proof.py), the current one first.
        self.link_keys = [keys.link for keys in self._keys]
        self.proof_keys = [keys.proof for keys in self._keys]
        self.link_key, self.proof_key = self.link_keys[0], self.proof_keys[0]

    def seal(self, field: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        # The field name is authenticated data: a phone ciphertext pasted into the email
        # column fails to open instead of being read as an address.
        sealed = self._aead.encrypt(nonce, value.encode(), field.encode())
        return _FORMAT_V2 + self._keys[0].key_id + nonce + sealed

    def open(self, field: str, blob: bytes) -> str:
        version = blob[:1]
        if version == _FORMAT_V2:
            keys = self._by_id.get(blob[1 : 1 + _KEY_ID_BYTES])
            if keys is None:
                raise ValueError("sealed under a data secret that is no longer configured")
            nonce = blob[1 + _KEY_ID_BYTES : 1 + _KEY_ID_BYTES + _NONCE_BYTES]
            ciphertext = blob[1 + _KEY_ID_BYTES + _NONCE_BYTES :]
            return keys.aead.decrypt(nonce, ciphertext, field.encode()).decode()
        if version != _FORMAT_V1:
            raise ValueError("unknown personal-data format version")
        # Version 1 names no key: its tag tells which one sealed it.
        nonce, ciphertext = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        for keys in self._keys:
            try:
                return keys.aead.decrypt(nonce, ciphertext, field.encode()).decode()
            except InvalidTag:
                continue
        raise InvalidTag()

    def opens(self, field: str, blob: bytes) -> bool:
        """Whether a listed secret opens `blob`. Asked instead of comparing what `read` gave
        with UNREADABLE, which anyone can type (a review: a leaked link's note "[unreadable]"
        passed for one, and recorded a new answer at every press past the link's cap)."""
        try:
            self.open(field, blob)
        except (ValueError, InvalidTag):
            return False
        return True

    def read(self, field: str, blob: bytes | None) -> str | None:
        """`open` for what people read (a reveal, a list, a duty notice, a citizen's own
        record): None for no value, UNREADABLE for one that no listed secret opens, logged.
        An error there hid a whole staff list, and a citizen's call for help from the duty
        staff, behind one value."""
        if not blob:
            return None
        try:
            return self.open(field, blob)
        except (ValueError, InvalidTag):
            self.report_unopened(field, blob)
            return UNREADABLE

    def report_unopened(self, field: str, blob: bytes, **context: object) -> None:
        """A value no listed secret opens was read: counted, and logged with the field and
        the fingerprint where the value names one (version 2; none for older or damaged), at
        most once per field and fingerprint every 5 minutes in a process."""
        named = blob[1 : 1 + _KEY_ID_BYTES].hex() if blob[:1] == _FORMAT_V2 else None
        _UNOPENED.note(field, named, **context)

    @property
    def fingerprints(self) -> list[str]:
        """The listed data secrets' fingerprints (what sealed values name), first the current:
        what an operator compares, never the secrets."""
        return [keys.key_id.hex() for keys in self._keys]

    @property
    def current_prefix(self) -> bytes:
        """How every value sealed under the current data secret begins (what a rotation
        counts and selects by)."""
        return _FORMAT_V2 + self._keys[0].key_id

    def lookup_hash(self, field: str, value: str) -> str:
        return hmac.new(self._lookup_key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()


# Provider texts quote the destination ("The 'To' number +821012345678 is not valid"): any run
# of 7 or more digits (with the usual separators) and any e-mail address is taken out before
# such a text is stored, shown to staff or kept after erasure.
# Separators as people type them too: dashes of every kind, slashes, the minus sign, and
# underscores and what draws nothing between digits (a probe's reason kept
# "010\u200b2000\u200b0001" and "010_2000_0001" whole). Not a tilde: "2023~2024년" is a range.
_PHONE_LIKE = re.compile(
    r"\+?\d[\d\s().\-/_\u00b7\u200b-\u200d\u2060\ufeff\u2010-\u2015\u2212]{5,}\d"
)
# Anything either side of an @: a domain in any letters (예시.한국), or with no dot at all.
_EMAIL_LIKE = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+")


def scrub_contacts(text: str | None) -> str | None:
    """A provider's message with phone numbers and e-mail addresses replaced by [contact]."""
    if not text:
        return text
    scrubbed = _scrubbed(text)
    # Full-width digits or "＠" (a review's "kim＠…") are read as the plain ones, NFKC, and a
    # URL's "%2B44%207911…" or "…%40example.com" decoded (a review); only a text holding a
    # contact so is given back so ("10⁶" would read "106").
    plain = unicodedata.normalize("NFKC", urllib.parse.unquote(text))
    if plain != text and _scrubbed(plain) != plain:
        return _scrubbed(plain)
    return scrubbed


def _scrubbed(text: str) -> str:
    return _PHONE_LIKE.sub(_phone_or_code, _EMAIL_LIKE.sub("[contact]", text))


def scrub_name(text: str, name: str) -> str:
    """`text` with the person's name, and each part of it of two letters or more, replaced by
    [name], whatever the case; for a name in Hangul also its given name alone ("서연" of
    "이서연", "민수" of "남궁민수"). A staff's reason for a reveal is kept for good and outlives
    the erasure: "calling Jane Doe back" kept her name beside her record's id (a review)."""
    parts = name.split()
    found = {" ".join(parts), "".join(parts), *(part for part in parts if len(part) >= 2)}
    for part in parts:
        if len(part) >= 3 and all("\uac00" <= letter <= "\ud7a3" for letter in part):
            found.update({part[1:], part[2:]} if len(part) >= 4 else {part[1:]})
    found = {each for each in found if len(each) >= 2}
    if not found:
        return text
    words = "|".join(_as_word(each) for each in sorted(found, key=len, reverse=True))
    return re.sub(words, "[name]", text, flags=re.IGNORECASE)


# Between a spaced-out name's syllables: one space, dot, hyphen, middle dot or invisible mark.
_HANGUL_GAP = r"[\s.\-\u00b7\u200b-\u200d\u2060]"


def _as_word(part: str) -> str:
    """A name part as a word: not within another word ("An" of "Li An" is not the "an" of
    "plan": a review saw reasons mangled for good). A Hangul part is matched within a word
    too, as particles and titles join it ("서연님", "서연이"), and with spaces between its
    syllables.
    """
    if all("\uac00" <= letter <= "\ud7a3" for letter in part):
        # Spaced out too ("김 민 준", "김.민.준님": a probe's reason kept it so), from a word's
        # start: "시민 준비" holds no "민준" (a review saw it mangled so).
        spaced = _HANGUL_GAP.join(re.escape(letter) for letter in part)
        return rf"{re.escape(part)}|(?<![\uac00-\ud7a3]){spaced}"
    word = re.escape(part)
    if len(part) <= 2:  # "An", "Oh", "Yu": as written or in capitals, not the words "an", "oh"
        word = f"(?-i:{re.escape(part)}|{re.escape(part.upper())})"
    return rf"(?<![^\W\d_]){word}(?![^\W\d_])"


def _phone_or_code(found: re.Match[str]) -> str:
    # "550 5.1.1" and "error 30003" are codes, not numbers: a phone number has 7+ digits.
    return "[contact]" if sum(c.isdigit() for c in found[0]) >= 7 else found[0]


def token_hash(token: str) -> str:
    """Hash of a random bearer token (staff key, manage token); 256-bit tokens need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()
