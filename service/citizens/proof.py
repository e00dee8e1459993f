"""A proof of work that admits a registration (or a code asked for after it) past its
address's limit.

Roaming phones reach the internet through their home carrier's NAT, and a hotel's or an
airport's Wi-Fi puts a tour group behind one address: in a crisis, thousands of travellers
register from a handful of addresses at once, and rate_limit_client (20 an hour) would turn
most of them away. Past it, a client may still register by solving an ALTCHA challenge
(https://altcha.org; the `altcha` package's first protocol, altcha.v1): find the number below
max_number whose SHA-256 with the challenge's salt is the challenge. The register page does
it in seconds; a script pays the same CPU for every registration, against the ~10 ms a
registration costs us, and at most rate_limit_client_proven an address. A GPU pays far less:
the ceiling, not the work, is what bounds one address. Each solution is taken once
(RateLimits.take_proven_registration), and a challenge lives CHALLENGE_LIFE."""

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from altcha.v1 import ChallengeOptions, create_challenge, verify_solution

from service.citizens.places import AddressLookupBusy
from service.errors import ServiceUnavailable, TooManyRequests
from service.rate_limits import Message, RateLimits, Rule, refusal_of

# Sent with the registration: the solved challenge, as ALTCHA's base64 payload.
PROOF_HEADER = "X-Anjeon-Proof"
CHALLENGE_PATH = "/v1/citizens/proof"
CHALLENGE_LIFE = timedelta(minutes=10)
# A payload is a few hundred characters: more is not one.
_PAYLOAD_MOST = 2048
_ALGORITHM = "SHA-256"
# What a proof stands in for: the client's limits (its address's and IPv6 network's, and its
# part of a number block's and a country's codes), and the shares of codes everyone draws on
# (a proven request's codes count in shares of their own: rate_limit_global_proven, and the
# block's and country's "proven:" keys). A code held by a share strangers filled is then sent
# on a resend that solves a proof (a review: it was refused outright for an hour).
_A_PROOF_LIFTS = frozenset(
    {
        Rule.CLIENT,
        Rule.CLIENT_NETWORK,
        Rule.PREFIX_CLIENT,
        Rule.COUNTRY_CLIENT,
        Rule.GLOBAL,
        Rule.PREFIX,
        Rule.COUNTRY,
        Rule.EMAIL_DOMAIN_CLIENT,
        Rule.CLIENT_UNVERIFIED,
    }
)


def new_challenge(key: bytes, *, max_number: int, now: datetime) -> dict[str, object]:
    """A challenge to solve, signed with key, that expires CHALLENGE_LIFE from now."""
    challenge = create_challenge(
        ChallengeOptions(
            algorithm=_ALGORITHM,
            hmac_key=key,
            max_number=max_number,
            expires=now + CHALLENGE_LIFE,
        )
    )
    return challenge.to_dict()


@dataclass(frozen=True)
class Proof:
    """A solution that holds: its signature is the key it is taken once under."""

    signature: str


def checked(payload: str | None, key: bytes, previous: Sequence[bytes] = ()) -> Proof | None:
    """The proof in `payload` when it solves a challenge we signed that has not expired; None
    otherwise (absent, malformed, wrong, tampered with or stale: all the same to the caller).
    `previous`: the keys before `key` (a rotation), whose challenges still count."""
    if not payload or len(payload) > _PAYLOAD_MOST:
        return None
    try:
        solved = json.loads(base64.b64decode(payload, validate=True))
        if not isinstance(solved, dict) or solved.get("algorithm") != _ALGORITHM:
            return None
        holds = any(
            verify_solution(solved, each, check_expires=True)[0] for each in (key, *previous)
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, binascii.Error):
        return None
    signature = solved.get("signature")
    return Proof(signature) if holds and isinstance(signature, str) else None


@dataclass(frozen=True)
class Presented:
    """What a request brings to be admitted past its address's limit: the address, its
    X-Anjeon-Proof (if any), the key challenges are signed with, and their size (0: no
    proofs are taken)."""

    client: str
    payload: str | None
    key: bytes
    max_number: int
    previous_keys: tuple[bytes, ...] = ()


def admit_registration(limits: RateLimits, presented: Presented) -> bool:
    """Take the address's registration limit; past it, a proof in the request admits the
    registration instead (once, within rate_limit_client_proven): True when a proof did.
    Refused: TooManyRequests, naming where a challenge is to be had when a proof would do."""
    client = presented.client
    return _admitted(
        limits,
        presented,
        take=lambda: limits.take_registration(client),
        take_proven=lambda proof: limits.take_proven_registration(client, proof=proof.signature),
    )


@contextmanager
def registration_admitted(limits: RateLimits, presented: Presented) -> Iterator[bool]:
    """admit_registration around the checks that may ask the geocoder. When its turns were
    all taken before the request spent one (a 503: nothing looked up, nothing stored), or the
    client address's share of them is used up (a 429), the address's registration is given
    back. A proof, once spent, stays spent."""
    proven = admit_registration(limits, presented)
    taken_at = time.monotonic()
    try:
        yield proven
    except (AddressLookupBusy, TooManyRequests) as refused:
        # A busy geocoder before any turn, or the address's share of the turns used up
        # (the registration by country or point still goes through): nothing was done.
        nothing_done = (
            refused.no_turn_spent
            if isinstance(refused, AddressLookupBusy)
            else refused.rule == Rule.GEOCODE_CLIENT
        )
        if nothing_done and not proven:
            with suppress(ServiceUnavailable):  # the storage failed: the hit stays counted
                taken_s_ago = time.monotonic() - taken_at
                limits.give_back_registration(presented.client, taken_s_ago=taken_s_ago)
        raise


def admit_new_code(
    limits: RateLimits, presented: Presented, citizen_id: int, message: Message | None = None
) -> bool:
    """As admit_registration, for a code a citizen asks for after registering (a resend, a
    new phone or e-mail): the traveller who registered behind a crowded address resends from
    it too. The citizen's own limit (rate_limit_resend), and the `message`'s when it is given,
    hold with or without a proof, and are taken with it: a refusal spends no solution."""
    client = presented.client
    return _admitted(
        limits,
        presented,
        take=lambda: limits.take_resend(citizen_id, client=client, message=message),
        take_proven=lambda proof: limits.take_proven_resend(
            citizen_id, client=client, proof=proof.signature, message=message
        ),
    )


def _admitted(
    limits: RateLimits,
    presented: Presented,
    *,
    take: Callable[[], None],
    take_proven: Callable[[Proof], None],
) -> bool:
    try:
        take()
        return False
    except TooManyRequests as refused:
        if not presented.max_number:
            raise
        # Only the client's limits give way to a proof (and the shares the proven ones stand
        # in for): while another refuses too (the citizen's own, a contact's), a challenge
        # would be solved for nothing; that one's wait is told.
        if others := {r: w for r, w in refused.waits.items() if r not in _A_PROOF_LIFTS}:
            raise refusal_of(others) from refused
        proof = checked(presented.payload, presented.key, presented.previous_keys)
        if proof is None:
            if not limits.proven_left(presented.client):
                raise  # past the ceiling too: a challenge would be solved for nothing
            raise TooManyRequests(
                f"{refused.detail}; or solve the challenge of GET {CHALLENGE_PATH} and send"
                f" the solution in {PROOF_HEADER}",
                retry_after_s=refused.retry_after_s,
                rule=refused.rule,
                proof=CHALLENGE_PATH,
            ) from refused
    take_proven(proof)
    return True
