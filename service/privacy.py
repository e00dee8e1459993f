"""Personal data at rest: AES-GCM encryption and keyed look-up hashes, from one secret."""

import hashlib
import hmac
import os
import re
import unicodedata

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_FORMAT_VERSION = b"\x01"
_NONCE_BYTES = 12


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class PersonalDataVault:
    """Seals personal fields. Separate keys for encryption and look-ups, derived by HKDF,
    so a leaked look-up key cannot decrypt anything."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(_derive(secret, b"anjeon/pii-encryption/v1"))
        self._lookup_key = _derive(secret, b"anjeon/pii-lookup/v1")
        # The signing key of check-in links (service/dispatch/checkin_tokens.py).
        self.link_key = _derive(secret, b"anjeon/checkin-link-key/v1")
        # The signing key of registration proofs of work (service/citizens/proof.py).
        self.proof_key = _derive(secret, b"anjeon/registration-proof/v1")

    def seal(self, field: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        # The field name is authenticated data: a phone ciphertext pasted into the email
        # column fails to open instead of being read as an address.
        return _FORMAT_VERSION + nonce + self._aead.encrypt(nonce, value.encode(), field.encode())

    def open(self, field: str, blob: bytes) -> str:
        if blob[:1] != _FORMAT_VERSION:
            raise ValueError("unknown personal-data format version")
        nonce, ciphertext = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        return self._aead.decrypt(nonce, ciphertext, field.encode()).decode()

    def lookup_hash(self, field: str, value: str) -> str:
        return hmac.new(self._lookup_key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()


# Provider texts quote the destination ("The 'To' number +821012345678 is not valid"): any run
# of 7 or more digits (with the usual separators) and any e-mail address is taken out before
# such a text is stored, shown to staff or kept after erasure.
# Separators as people type them too: dashes of every kind, slashes, the minus sign.
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().\-/\u00b7\u2010-\u2015\u2212]{5,}\d")
# Anything either side of an @: a domain in any letters (예시.한국), or with no dot at all.
_EMAIL_LIKE = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+")


def scrub_contacts(text: str | None) -> str | None:
    """A provider's message with phone numbers and e-mail addresses replaced by [contact]."""
    if not text:
        return text
    scrubbed = _PHONE_LIKE.sub(_phone_or_code, _EMAIL_LIKE.sub("[contact]", text))
    # Full-width digits or "＠" (a review's "kim＠…") are read as the plain ones, NFKC; only a
    # text holding a contact so is given back normalised ("10⁶" would read "106").
    plain = unicodedata.normalize("NFKC", scrubbed)
    if plain == scrubbed:
        return scrubbed
    plain_scrubbed = _PHONE_LIKE.sub(_phone_or_code, _EMAIL_LIKE.sub("[contact]", plain))
    return plain_scrubbed if plain_scrubbed != plain else scrubbed


def _phone_or_code(found: re.Match[str]) -> str:
    # "550 5.1.1" and "error 30003" are codes, not numbers: a phone number has 7+ digits.
    return "[contact]" if sum(c.isdigit() for c in found[0]) >= 7 else found[0]


def token_hash(token: str) -> str:
    """Hash of a random bearer token (staff key, manage token); 256-bit tokens need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()
