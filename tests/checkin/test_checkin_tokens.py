"""Check-in link tokens: they round-trip, fit an SMS, and anything altered, cut, expired, signed
with another key or made up is refused with None, never an exception."""

import base64
import hashlib
import hmac
import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from service.dispatch.checkin_tokens import CheckinTokens

SECRET = b"k" * 32
TOKENS = CheckinTokens(SECRET)
EXPIRES = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
BEFORE = EXPIRES - timedelta(hours=1)
ALPHABET = string.ascii_letters + string.digits + "-_"


def _spell(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unspell(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _signed(body: bytes, *, info: bytes | None = b"anjeon/checkin-link/v1") -> str:
    """A token made by hand as the module's docstring describes it (info None: the raw secret)."""
    key = SECRET
    if info is not None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(SECRET)
    return _spell(body + hmac.new(key, body, hashlib.sha256).digest()[:12])


ids = st.integers(min_value=0, max_value=2**63 - 1)
expiries = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2105, 12, 31), timezones=st.just(UTC)
)


@given(ids, ids, expiries)
def test_round_trip(citizen_id, advisory_id, expires_at):
    token = TOKENS.issue(citizen_id, advisory_id, expires_at)
    assert set(token) <= set(ALPHABET)  # no escaping in a URL path
    target = TOKENS.verify(token, expires_at - timedelta(seconds=1))
    assert target == (citizen_id, advisory_id)
    assert (target.citizen_id, target.advisory_id) == (citizen_id, advisory_id)


@given(st.integers(0, 2**49 - 1), st.integers(0, 2**49 - 1), expiries)
def test_fits_an_sms_link(citizen_id, advisory_id, expires_at):
    assert len(TOKENS.issue(citizen_id, advisory_id, expires_at)) <= 43


def test_everyday_ids_give_short_tokens():
    assert len(TOKENS.issue(2**21 - 1, 2**21 - 1, EXPIRES)) <= 31
    assert len(TOKENS.issue(2**49 - 1, 2**49 - 1, EXPIRES)) == 42


@pytest.mark.parametrize(("citizen_id", "advisory_id"), [(1, 1), (48213, 907), (2**49 - 1, 5)])
def test_every_single_character_change_is_refused(citizen_id, advisory_id):
    token = TOKENS.issue(citizen_id, advisory_id, EXPIRES)
    assert TOKENS.verify(token, BEFORE) == (citizen_id, advisory_id)
    tried = 0
    for i, original in enumerate(token):
        for c in ALPHABET:
            if c != original:
                assert TOKENS.verify(token[:i] + c + token[i + 1 :], BEFORE) is None, (i, c)
                tried += 1
    assert tried == len(token) * (len(ALPHABET) - 1)


def test_cut_extended_or_padded_tokens_are_refused():
    token = TOKENS.issue(48213, 907, EXPIRES)
    for n in range(len(token)):
        assert TOKENS.verify(token[:n], BEFORE) is None
        assert TOKENS.verify(token[n + 1 :], BEFORE) is None
    for extra in ["A", "=", "==", "AA", " ", "\n", "/", "."]:
        assert TOKENS.verify(token + extra, BEFORE) is None
        assert TOKENS.verify(extra + token, BEFORE) is None
    # The standard alphabet's spelling of the same bytes is not ours either.
    standard = token.replace("-", "+").replace("_", "/")
    assert standard == token or TOKENS.verify(standard, BEFORE) is None


def test_expiry_boundary():
    token = TOKENS.issue(7, 9, EXPIRES)
    assert TOKENS.verify(token, EXPIRES - timedelta(microseconds=1)) == (7, 9)
    assert TOKENS.verify(token, EXPIRES) is None
    assert TOKENS.verify(token, EXPIRES + timedelta(days=3650)) is None
    # The same instant in another zone is the same instant.
    seoul = timezone(timedelta(hours=9))
    assert TOKENS.verify(token, (EXPIRES - timedelta(seconds=1)).astimezone(seoul)) == (7, 9)
    assert TOKENS.verify(token, EXPIRES.astimezone(seoul)) is None


def test_a_fraction_of_a_second_is_cut_never_extended():
    token = TOKENS.issue(7, 9, EXPIRES + timedelta(milliseconds=999))
    assert TOKENS.verify(token, EXPIRES - timedelta(microseconds=1)) == (7, 9)
    assert TOKENS.verify(token, EXPIRES) is None


def test_another_key_refuses_it():
    token = TOKENS.issue(7, 9, EXPIRES)
    assert CheckinTokens(b"another secret").verify(token, BEFORE) is None
    assert CheckinTokens(SECRET).verify(token, BEFORE) == (7, 9)  # same secret, same key


def test_the_format_is_the_documented_one():
    expiry = int(EXPIRES.timestamp()).to_bytes(4, "big")
    # citizen 300 is LEB128 ac 02; advisory 5 is 05.
    assert TOKENS.issue(300, 5, EXPIRES) == _signed(b"\x01\xac\x02\x05" + expiry)


def test_the_key_is_for_check_in_links_only():
    """A tag made with the raw secret, or with the personal-data look-up key, is not a valid
    check-in tag: the purpose is part of the derived key."""
    body = _unspell(TOKENS.issue(7, 9, EXPIRES))[:-12]
    assert TOKENS.verify(_signed(body), BEFORE) == (7, 9)
    for info in (None, b"anjeon/pii-lookup/v1", b"anjeon/checkin-link/v2"):
        assert TOKENS.verify(_signed(body, info=info), BEFORE) is None


def test_a_longer_expiry_cannot_be_written_in():
    """Changing the expiry bytes to a later time, whatever the tag, is refused."""
    raw = bytearray(_unspell(TOKENS.issue(7, 9, EXPIRES)))
    raw[3:7] = (2**32 - 1).to_bytes(4, "big")  # version, 7, 9, then the expiry
    assert TOKENS.verify(_spell(bytes(raw)), EXPIRES + timedelta(days=1)) is None


GARBAGE = [
    "",
    "=",
    "A",
    "AAAA",
    "A" * 26,
    "A" * 43,
    "_" * 43,
    "A" * 100_000,
    "../../etc/passwd",
    "%00",
    "\x00" * 30,
    "토큰" * 10,
    "AQEBazbsgIsL3d4rVL68FzpMyA",  # the right shape, made by hand
    " " + "A" * 30,
]


@pytest.mark.parametrize("token", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_refused(token):
    assert TOKENS.verify(token, BEFORE) is None


@given(st.text())
def test_random_text_is_refused_without_raising(token):
    assert TOKENS.verify(token, BEFORE) is None


@given(st.binary(min_size=0, max_size=48))
def test_random_bytes_well_spelled_are_refused(raw):
    assert TOKENS.verify(_spell(raw), BEFORE) is None


@given(st.binary(min_size=4, max_size=35))
def test_a_well_signed_body_of_any_shape_never_raises(body):
    """Only with the key can a body of the wrong shape be signed; even then it reads as None,
    and what does read is exactly what issue() writes (minimal LEB128, one spelling)."""
    token = _signed(b"\x01" + body)
    target = TOKENS.verify(token, BEFORE)
    if target is not None:
        expires_at = datetime.fromtimestamp(int.from_bytes(body[-4:], "big"), UTC)
        assert TOKENS.issue(*target, expires_at) == token


@pytest.mark.parametrize(
    ("citizen_id", "advisory_id", "expires_at"),
    [
        (-1, 1, EXPIRES),
        (1, -1, EXPIRES),
        (2**63, 1, EXPIRES),
        (True, 1, EXPIRES),
        (1, 1, datetime(2027, 3, 1)),  # no time zone
        (1, 1, datetime(2107, 1, 1, tzinfo=UTC)),
        (1, 1, datetime(1969, 12, 31, tzinfo=UTC)),
    ],
)
def test_issue_refuses_what_it_cannot_sign(citizen_id, advisory_id, expires_at):
    with pytest.raises(ValueError):
        TOKENS.issue(citizen_id, advisory_id, expires_at)


def test_verify_wants_an_aware_now():
    token = TOKENS.issue(7, 9, EXPIRES)
    with pytest.raises(ValueError, match="time zone"):
        TOKENS.verify(token, datetime(2027, 1, 1))


def test_only_the_shortest_spelling_of_an_id_is_read():
    """7 written as 87 00 (a trailing empty group) is refused even when signed with the key."""
    expiry = int(EXPIRES.timestamp()).to_bytes(4, "big")
    assert TOKENS.verify(_signed(b"\x01\x07\x09" + expiry), BEFORE) == (7, 9)
    assert TOKENS.verify(_signed(b"\x01\x87\x00\x09" + expiry), BEFORE) is None
    assert TOKENS.verify(_signed(b"\x01\x07\x09\x00" + expiry), BEFORE) is None  # a stray byte
    assert TOKENS.verify(_signed(b"\x01" + b"\xff" * 9 + b"\x01\x09" + expiry), BEFORE) is None
