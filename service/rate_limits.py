"""Limits that hold across processes: named rules counted by the `limits` library in
ANJEON_RATE_LIMIT_STORAGE (memory:// for one process, Redis for several), and the daily budget
of SMS that are not advisory alerts. A caller takes a hit before it acts; a refused hit raises
TooManyRequests (429 with Retry-After). Advisory alerts never pass through here."""

import hashlib
import hmac
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Literal

import phonenumbers
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisStorage,
    Storage,
    storage_from_string,
)
from limits.strategies import MovingWindowRateLimiter
from publicsuffixlist import PublicSuffixList
from redis.commands.core import Script

from service.config import Settings
from service.errors import ServiceUnavailable, TooManyRequests
from service.metrics import MESSAGE_BUDGET_EXHAUSTED, RATE_LIMITED

log = logging.getLogger(__name__)

# A hung Redis must not hang every registration: fail within seconds, as a 503.
_STORAGE_TIMEOUT_S = 2.0
# Once the storage failed, what is counted in this process meanwhile does not ask it again for
# this long: a hung Redis cost each citizen's change two 2 s timeouts (a review).
_AWAY_RETRY_S = 10.0
_BUDGET_KEY_LIFE_S = 2 * 86_400

# Every hit of a take_all in one Redis round trip, all or none, on the `limits` library's own
# moving-window lists (the newest timestamp first, trimmed to the limit), so its reads
# (get_window_stats, for Retry-After) see them. A list whose limit-th newest entry is still in
# its window is full. KEYS: the keys; ARGV: the time, then each key's limit and window length.
# Returns the 1-based positions of the full ones (none: all were counted). A test then a hit
# of each item cost two round trips apiece: 12 for a registration and its code.
_TAKE_ALL_LUA = """
local now = tonumber(ARGV[1])
local taken, full = {}, {}
for i, key in ipairs(KEYS) do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    taken[key] = (taken[key] or 0) + 1
    local entry = redis.call('lindex', key, limit - taken[key])
    if taken[key] > limit or (entry and tonumber(entry) >= now - expiry) then
        full[#full + 1] = i
    end
end
if #full == 0 then
    for i, key in ipairs(KEYS) do
        local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
        redis.call('lpush', key, ARGV[1])
        redis.call('ltrim', key, 0, limit - 1)
        redis.call('expire', key, expiry)
    end
end
return full
"""

# A give-back takes out the entry nearest to when its hit was taken, not the newest: the newest
# stays counted for longer than the old one would have (a client verifying its codes late got
# about half as many again). The lists are a limit long at most, newest first, and stay in order.
_GIVE_BACK_LUA = """
local taken_at = tonumber(ARGV[1])
local nearest, gap = nil, nil
for i, entry in ipairs(redis.call('lrange', KEYS[1], 0, -1)) do
    local off = math.abs(tonumber(entry) - taken_at)
    if gap == nil or off < gap then
        nearest, gap = i, off
    end
end
if nearest then
    redis.call('lset', KEYS[1], nearest - 1, 'given-back')
    redis.call('lrem', KEYS[1], 1, 'given-back')
end
return nearest
"""


class Rule(StrEnum):
    """The named rules; each reads its limits from the setting rate_limit_<name>."""

    CLIENT = "client"  # registrations and resends per client address
    CLIENT_NETWORK = "client_network"  # registrations and resends per IPv6 /48
    CLIENT_PROVEN = "client_proven"  # registrations past CLIENT with a proof of work, per address
    CLIENT_PROVEN_NETWORK = "client_proven_network"  # the same, per IPv6 /48 over its /64s
    PROOF = "proof"  # each solved proof of work admits one registration (fixed: _FIXED)
    RESEND = "resend"  # code resends per citizen
    CHANGE = "change"  # changes of a record (PATCH, a new location) per citizen
    CHANGE_REFUSED = "change_refused"  # changes of one record refused as bad input per address
    CHANGE_REFUSED_ADDRESS = "change_refused_address"  # of any record, per client address
    CONTACT = "contact"  # messages per destination phone number or e-mail address
    PREFIX = "prefix"  # SMS per block of 10,000 numbers
    PREFIX_CLIENT = "prefix_client"  # SMS codes per block of numbers from one client address
    COUNTRY = "country"  # SMS per destination country (not the home region)
    COUNTRY_CLIENT = "country_client"  # SMS codes per destination country from one client
    EMAIL_DOMAIN_CLIENT = "email_domain_client"  # e-mail codes per mail domain from one client
    CLIENT_UNVERIFIED = "client_unverified"  # codes per client network and channel not verified
    GEOCODER = "geocoder"  # requests to the geocoder, from the whole service (geocoder_per_second)
    GEOCODE = "geocode"  # changes of a citizen's places that give an address, per citizen
    GEOCODE_CLIENT = "geocode_client"  # requests that give an address, per client address
    GLOBAL = "global"  # messages per channel
    GLOBAL_PROVEN = "global_proven"  # codes of registrations a proof of work admitted, per channel
    COOLDOWN = "cooldown"  # codes per contact from registrations and changes (not resends)
    CODE_TRY = "code_try"  # typed codes per contact being verified, whichever record asks
    REPLY = "reply"  # our SMS answers to one citizen's number's replies
    REPLY_UNKNOWN = "reply_unknown"  # our SMS answers to one number no citizen holds
    REPLY_UNKNOWN_ALL = "reply_unknown_all"  # our SMS answers to all numbers no citizen holds
    TEST_SEND = "test_send"  # staff's test sends of an advisory, per staff key
    REVEAL = "reveal"  # citizens' personal data revealed, per staff key
    PREVIEW = "preview"  # reach previews of an area a staff key drew, per staff key
    DUTY_PAGE = "duty_page"  # notices to the duty staff one by one, for the whole service
    DUTY_PAGE_NEW = "duty_page_new"  # of those, the cries of records not established
    DUTY_SUMMARY = "duty_summary"  # summaries of the notices past those (fixed: _FIXED)
    STAFF = "staff"  # requests per staff key, whatever they ask


def refusal_of(waits: dict[str, int]) -> TooManyRequests:
    """The refusal of these limits (rule: seconds until it admits), told by the longest wait."""
    wait, rule = max((wait, rule) for rule, wait in waits.items())
    return TooManyRequests(
        f"{_REFUSED[Rule(rule)]}; retry in {wait} s", retry_after_s=wait, rule=rule, waits=waits
    )


# Limits any record may spend on one contact (or range of numbers): a refusal's Retry-After is
# the whole window, never when the oldest hit ends.
_COUNTED_FOR_ANYONE = frozenset(
    {
        Rule.CONTACT,
        Rule.COOLDOWN,
        Rule.CODE_TRY,
        Rule.PREFIX,
        Rule.PREFIX_CLIENT,
        Rule.EMAIL_DOMAIN_CLIENT,
    }
)

# What a refused client is told: the kind of limit, never whose or which contact.
_REFUSED = {
    Rule.CLIENT: "too many requests from this address",
    Rule.CLIENT_NETWORK: "too many requests from this network",
    Rule.CLIENT_PROVEN: "too many registrations from this address, even with proofs of work",
    Rule.CLIENT_PROVEN_NETWORK: (
        "too many registrations from this network, even with proofs of work"
    ),
    Rule.PROOF: "this proof of work was used already: solve a new challenge",
    Rule.RESEND: "a code was sent a moment ago",
    Rule.CHANGE: "too many changes to this record: try again later",
    Rule.CHANGE_REFUSED: "too many refused changes of this record: try again later",
    Rule.CHANGE_REFUSED_ADDRESS: "too many refused changes from this address: try again later",
    Rule.CONTACT: "too many messages to this contact",
    Rule.PREFIX: "too many messages to numbers of this range",
    Rule.PREFIX_CLIENT: "too many messages to numbers of this range from this address",
    Rule.COUNTRY: "too many messages to numbers of this country",
    Rule.COUNTRY_CLIENT: "too many messages to numbers of this country from this address",
    Rule.EMAIL_DOMAIN_CLIENT: (
        "too many messages to addresses of this mail domain from this address"
    ),
    Rule.CLIENT_UNVERIFIED: "too many codes sent for this network were not verified",
    Rule.GLOBAL: "too many messages are being sent",
    Rule.GLOBAL_PROVEN: "too many messages are being sent",
    Rule.COOLDOWN: "a code was sent to this contact a moment ago",
    Rule.CODE_TRY: "too many codes were tried for this contact: try again later",
    Rule.REPLY: "too many answers to this number",
    Rule.REPLY_UNKNOWN: "too many answers to this number",
    Rule.REPLY_UNKNOWN_ALL: "too many answers to unknown numbers",
    Rule.TEST_SEND: "too many test sends from this staff key",
    Rule.DUTY_PAGE: "too many duty notices this hour",
    Rule.DUTY_PAGE_NEW: "too many duty notices of new records this hour",
    Rule.DUTY_SUMMARY: "a duty summary went a moment ago",
    Rule.REVEAL: "too many citizens revealed with this staff key: ask an admin if it is needed",
    Rule.PREVIEW: "too many reach previews of new areas with this staff key",
    Rule.STAFF: "too many requests with this staff key",
    Rule.GEOCODER: "the address look-up is busy",  # never a 429: the geocoder waits its turn
    Rule.GEOCODE: "too many changes by address for this record: give a country code, or lat "
    "and lon",
    Rule.GEOCODE_CLIENT: "too many places by address from this network: give a country code, "
    "or lat and lon",
}


class AddressLookups:
    """The limits a request's look-ups by address spend. Nominatim answers the whole service
    once a second: a client address takes at most its share of those turns (GEOCODE_CLIENT,
    one hit per look-up; a probe holding 20 cheap records took every turn with PATCHes, and
    everyone else's addresses were refused as busy), and a change takes one of its record's
    changes by address (GEOCODE). Taken once the request is found good; what a busy geocoder
    left unused is given back."""

    def __init__(self, limits: "RateLimits", *, client: str, citizen_id: str | None) -> None:
        self._limits = limits
        self._client = address_key(client)
        self._citizen_id = citizen_id
        self._taken = 0
        self._taken_at = 0.0

    def take(self, lookups: int) -> None:
        hits: list[tuple[Rule | str, str]] = [(Rule.GEOCODE_CLIENT, self._client)] * lookups
        if self._citizen_id is not None:
            hits.append((Rule.GEOCODE, self._citizen_id))
        self._limits.take_all(hits)
        self._taken, self._taken_at = lookups, time.monotonic()

    def give_back(self, *, made: int) -> None:
        """The geocoder was busy after `made` look-ups: the rest are given back, and the
        change too when none was made."""
        ago = time.monotonic() - self._taken_at
        for _ in range(self._taken - made):
            self._limits.give_back(Rule.GEOCODE_CLIENT, self._client, taken_s_ago=ago)
        if made == 0 and self._citizen_id is not None:
            self._limits.give_back(Rule.GEOCODE, self._citizen_id, taken_s_ago=ago)
        self._taken = made


_Hit = tuple[Rule, RateLimitItem, str]  # a rule, one of its limits, the hashed key


def _args(hit: _Hit) -> tuple[RateLimitItem, str, str]:
    """The limiter's arguments for a hit: its limit, then the identifiers (rule, key)."""
    rule, item, key = hit
    return item, rule, key


# A message that is not an alert: its channel ("sms" or "email") and its destination.
Message = tuple[str, str]


@dataclass(frozen=True)
class BudgetCharge:
    """One SMS counted against the day's budget."""

    allowed: bool  # send it; False: the budget is spent, do not send
    used: int  # SMS counted today (UTC), this one included
    budget: int
    # True for exactly one charge a day across all processes, the first refused: tell duty staff.
    just_spent: bool


class RateLimits:
    """The rules of one service, shared by every process that uses the same storage."""

    def __init__(self, settings: Settings, *, namespace: str = "limits") -> None:
        self._storage = _open_storage(settings.rate_limit_storage)
        self._limiter = MovingWindowRateLimiter(self._storage)
        # This process's own count, for what must go on while the storage is away.
        self._here = MovingWindowRateLimiter(MemoryStorage())
        self._here_lock = threading.Lock()
        self._away_until = 0.0  # time.monotonic(): counted here until then (_AWAY_RETRY_S)
        self._namespace = namespace
        self._rules = {rule: _items(settings, rule, namespace) for rule in Rule}
        self._budget = settings.sms_daily_budget
        # Called once a day, by whichever charge found the day's SMS budget spent (a code, a
        # notice, an answer to a text, a test send): the app tells the duty staff.
        self.when_budget_spent: Callable[[], None] = lambda: None
        self._home_region = settings.phone_default_region.upper()
        self._shared_domains = frozenset(settings.email_domains_shared)
        # Keys hold addresses and contacts: stored keyed-hashed, as the database stores contacts.
        self._key_secret = hmac.digest(
            settings.secret_key_bytes(), b"anjeon/rate-limit-keys/v1", "sha256"
        )
        self._errors: tuple[type[Exception], ...] = (StorageError,)
        if not isinstance(self._storage, MemoryStorage):
            self._errors += _as_tuple(self._storage.base_exceptions)
        # One server (or a sentinel's master) runs a script over any keys; a cluster only over
        # keys of one slot, so it keeps the library's own calls.
        self._take_script: Script | None = None
        self._give_back_script: Script | None = None
        if isinstance(self._storage, RedisStorage) and not isinstance(
            self._storage, RedisClusterStorage
        ):
            self._take_script = self._storage.get_connection().register_script(_TAKE_ALL_LUA)
            self._give_back_script = self._storage.get_connection().register_script(_GIVE_BACK_LUA)

    # ---- rules ----------------------------------------------------------------------------

    def take(self, rule: Rule | str, key: str) -> None:
        """Counts one hit of rule for key; raises TooManyRequests, nothing counted, when over."""
        self.take_all([(rule, key)])

    def take_all(self, hits: Iterable[tuple[Rule | str, str]]) -> None:
        """Counts one hit of each (rule, key), or none when any of them is over its limit."""
        keyed = [
            (Rule(rule), item, self._hashed(Rule(rule), key))
            for rule, key in hits
            for item in self._rules[Rule(rule)]
        ]
        with self._storage_guard():
            refused = self._take_in_script(keyed) if self._take_script else self._take(keyed)
            if refused:
                raise self._refusal(refused)

    def take_here_when_away(self, rule: Rule, key: str) -> None:
        """take(), or, while the storage does not answer, the same limit counted in this
        process alone: a consul reaching a person in danger must not wait for the Redis (a
        review: reveals answered 503 through its outage), and a stolen key still meets the
        limit, in each process."""
        if time.monotonic() >= self._away_until:
            try:
                self.take(rule, key)
                return
            except ServiceUnavailable:
                self._away_until = time.monotonic() + _AWAY_RETRY_S
                log.warning(
                    "rate-limit storage unavailable: counted here", extra={"rule": rule.value}
                )
        keyed = [(rule, item, self._hashed(rule, key)) for item in self._rules[rule]]
        with self._here_lock:
            refused = [hit for hit in keyed if not self._here.test(*_args(hit))]
            if refused:
                raise self._refusal(refused, self._here)
            for hit in keyed:
                self._here.hit(*_args(hit))

    def take_registration(self, client: str) -> None:
        """One registration from a client address (see client_address), refused while its
        network's share of unverified codes is full (see unverified_room)."""
        self.unverified_room(client)
        self.take_all(_client_hits(client))

    def unverified_room(self, client: str) -> None:
        """Refuse (TooManyRequests, counting nothing) while a channel's share of the client
        network's unverified codes is full: the request is asked for a proof of work up front,
        and its codes come from the proven pool. Found by a review: past the share a crowd's
        registrations answered 201 with their codes held, and nobody was told."""
        network = network_key(client)
        self._room((Rule.CLIENT_UNVERIFIED, f"{channel}:{network}") for channel in ("sms", "email"))

    def refused_change_room(self, client: str, citizen_id: str) -> None:
        """Refuse (TooManyRequests, counting nothing) once the record has had
        rate_limit_change_refused changes from the client address refused as bad input, or
        the address rate_limit_change_refused_address of any record's: each resolved its
        places for nothing (a probe's one token kept two cores busy with 19 good places and an
        ended stay, 422 after 20-100 ms each), so past it a change is refused before any work.
        Per record first: counted per address alone, one token's 30 bad changes shut every
        record's changes from a shared address (a hotel, a carrier's NAT) for an hour (a
        probe). The address's ceiling holds only a record with refusals of its own (a review:
        ten records' bad changes shut every other record's moves there): a record that made
        none is never held by others'. Counted in this process while the storage is away: a
        traveller's move must not wait for the Redis."""
        record, address = _refused_change_hits(client, citizen_id)
        for here in (False, True):
            if not here and time.monotonic() < self._away_until:
                continue  # the storage failed a moment ago: counted here
            try:
                self._room([record], here=here)
                if self._has_hits(record, here=here):
                    self._room([address], here=here)
                return
            except ServiceUnavailable:
                self._away_until = time.monotonic() + _AWAY_RETRY_S

    def _has_hits(self, hit: tuple[Rule, str], *, here: bool) -> bool:
        """Whether the (rule, key) was hit within any of its windows."""
        rule, key = hit
        keyed = [(rule, item, self._hashed(rule, key)) for item in self._rules[rule]]
        if here:
            with self._here_lock:
                stats = [self._here.get_window_stats(*_args(each)) for each in keyed]
        else:
            with self._storage_guard():
                stats = [self._limiter.get_window_stats(*_args(each)) for each in keyed]
        return any(
            stat.remaining < item.amount for stat, (_, item, _) in zip(stats, keyed, strict=True)
        )

    def count_refused_change(self, client: str, citizen_id: str) -> None:
        """A change from the client address was refused as bad input (see refused_change_room)."""
        for rule, key in _refused_change_hits(client, citizen_id):
            with suppress(TooManyRequests):
                self.take_here_when_away(rule, key)

    def _room(self, hits: Iterable[tuple[Rule, str]], *, here: bool = False) -> None:
        """Raise as take_all would when any (rule, key) is at its limit, counting nothing;
        `here`: as counted in this process alone (see take_here_when_away)."""
        keyed = [
            (rule, item, self._hashed(rule, key))
            for rule, key in hits
            for item in self._rules[rule]
        ]
        if here:
            with self._here_lock:
                refused = [hit for hit in keyed if not self._here.test(*_args(hit))]
                if refused:
                    raise self._refusal(refused, self._here)
            return
        with self._storage_guard():
            refused = [hit for hit in keyed if not self._limiter.test(*_args(hit))]
            if refused:
                raise self._refusal(refused)

    def give_back_registration(self, client: str, *, taken_s_ago: float) -> None:
        """Un-counts one registration from a client address whose request did nothing: a
        citizen retrying behind a busy geocoder is not refused for their own retries. Only in
        the windows that still hold it (`taken_s_ago`): from a shorter one, the entry given
        back would be another request's (a review's finding: 1/second was exceeded)."""
        for rule, key in _client_hits(client):
            self.give_back(rule, key, taken_s_ago=taken_s_ago)

    def proven_left(self, client: str) -> bool:
        """Whether a proven registration from this address would still be admitted (nothing
        counted): past the ceiling, no challenge is worth offering."""
        with self._storage_guard():
            return all(
                self._limiter.test(item, rule, self._hashed(rule, key))
                for rule, key in _proven_hits(client)
                for item in self._rules[rule]
            )

    def take_proven_registration(self, client: str, *, proof: str) -> None:
        """One registration past the address's limit, admitted by a solved proof of work (its
        signature): each proof once, at most rate_limit_client_proven from the address (IPv6:
        its /64) and rate_limit_client_proven_network from its IPv6 /48."""
        self.take_all([*_proven_hits(client), (Rule.PROOF, proof)])

    def take_resend(
        self, citizen_id: int | str, *, client: str, message: Message | None = None
    ) -> None:
        """One code asked for a citizen (a resend, a change of contact), from a client
        address; with the message's own limits when it is known (a resend's, all or none)."""
        hits = [*_client_hits(client), (Rule.RESEND, str(citizen_id))]
        if message is None:  # a change of contact: its code's share is taken later
            self.unverified_room(client)
        if message:  # the contact's own limit apart: take_contact
            hits += self._message_hits(*message, client=client, contact=False)
        self.take_all(hits)

    def take_proven_resend(
        self, citizen_id: int | str, *, client: str, proof: str, message: Message | None = None
    ) -> None:
        """As take_resend past the address's limit, admitted by a solved proof of work (as
        take_proven_registration): its message out of the proven pool. All or none: a proof
        that a limit refuses is not spent."""
        hits = [*_proven_hits(client), (Rule.PROOF, proof), (Rule.RESEND, str(citizen_id))]
        if message:
            hits += self._message_hits(*message, pool=Rule.GLOBAL_PROVEN, contact=False)
        self.take_all(hits)

    def take_contact(self, channel: str, destination: str) -> bool:
        """One code resent to a contact, within the contact's limit (rate_limit_contact),
        which every record that names it spends: False when it is full. Apart from the
        resend's other limits, so that its refusal is never told: a stranger's resend that
        came back 429 one resend sooner than another number's learnt that someone had had
        codes sent to it within the hour (a probe). The code is held instead, as a
        registration's is."""
        try:
            self.take(Rule.CONTACT, _contact_key(channel, destination))
        except TooManyRequests:
            return False
        return True

    def take_code_try(self, contact_hash: str) -> None:
        """One typed code for the contact with this lookup hash, counted before the comparison
        (atomic across processes: a burst of parallel guesses is held at the limit). Counted
        per contact, not per code: a new code (a change back and forth, a resend) starts its
        own 5 tries, so 5 a code alone would let one guess a stranger's code, and with it
        their number, by asking for code after code."""
        self.take(Rule.CODE_TRY, contact_hash)

    def check_code_tries(self, contact_hash: str) -> None:
        """Raise as take_code_try would when the contact's tries are spent, counting none (a
        try at a code never sent: answered as any other, without spending the owner's)."""
        self._room([(Rule.CODE_TRY, contact_hash)])

    def forget_code_tries(self, contact_hash: str) -> None:
        """The contact was verified: its tries are forgotten, so that a stranger's record that
        tries the number next is counted as for a number nobody tried (kept, the owner's right
        code would refuse the stranger one try early). Its code is spent: guessing starts over
        only with a new code, which the per-contact message limits hold."""
        with self._storage_guard():
            for item in self._rules[Rule.CODE_TRY]:
                self._limiter.clear(item, Rule.CODE_TRY, self._hashed(Rule.CODE_TRY, contact_hash))

    def take_test_send(
        self, staff_name: str, channel: Literal["sms", "email"], destination: str
    ) -> None:
        """One test send of an advisory by a staff key: per key, and like any message that is
        not an alert, per number block, country and channel, and for SMS out of the day's
        budget (not per contact: a consul tests on their own phone more often than a citizen
        gets codes). A test send carries one consul's words, approved by nobody: no key may
        text them to numbers beyond these (a probe sent a lure to three countries)."""
        hits = self._message_hits(channel, destination, contact=False)
        self.take_all([(Rule.TEST_SEND, staff_name), *hits])
        if channel == "sms" and not self.charge_sms_budget().allowed:
            raise TooManyRequests(
                "today's budget of SMS that are not alerts is spent",
                retry_after_s=seconds_to_next_budget_day(),
                rule="sms_budget",
            )

    def take_message(self, channel: Literal["sms", "email"], destination: str) -> None:
        """One message that is not an advisory alert (a code, a confirmation) to destination, an
        E.164 number or an e-mail address: per contact, for SMS per number block and country
        (not the home region), and per channel."""
        self.take_all(self._message_hits(channel, destination))

    def take_reply(self, sender: str, *, known: bool) -> bool:
        """One SMS answer to a text from `sender`: within the per-number limit (a number no
        citizen holds, not `known`, gets one a day, and all such numbers together a few: a
        probe's 40 unknown numbers were answered 40 times, each answer out of the codes' SMS
        budget) and the day's SMS budget. False (and nothing more to do) when one refuses or
        the storage is down: the text is still recorded, only our answer is not sent."""
        try:
            if known:
                self.take(Rule.REPLY, f"sms:{sender}")
            else:
                self.take_all(
                    [(Rule.REPLY_UNKNOWN, f"sms:{sender}"), (Rule.REPLY_UNKNOWN_ALL, "sms")]
                )
            return self.charge_sms_budget().allowed
        except (TooManyRequests, ServiceUnavailable):
            return False

    def take_new_contact(
        self,
        channel: Literal["sms", "email"],
        destination: str,
        *,
        proven: bool = False,
        client: str | None = None,
    ) -> None:
        """A code for a contact given in a registration or a change, from a `client` address:
        take_message, and at most one such code per contact in the cooldown (an
        erase/re-register loop sends nothing). One take: a code the message limits hold does
        not start the cooldown. A registration a proof of work admitted (`proven`) draws on a
        pool of its own, not the channel's: two addresses solving proofs used up the codes
        every other traveller needed (probe)."""
        key = f"{channel}:{destination if channel == 'sms' else email_key(destination)}"
        pool = Rule.GLOBAL_PROVEN if proven else Rule.GLOBAL
        hits = self._message_hits(channel, destination, pool, client=client)
        self.take_all([(Rule.COOLDOWN, key), *hits])

    def _message_hits(
        self,
        channel: str,
        destination: str,
        pool: Rule = Rule.GLOBAL,
        *,
        client: str | None = None,
        contact: bool = True,
    ) -> list[tuple[Rule, str]]:
        hits = self._destination_hits(channel, destination, pool, client=client)
        if contact:
            hits.insert(0, (Rule.CONTACT, _contact_key(channel, destination)))
        return [*hits, (pool, channel)]

    def _destination_hits(
        self, channel: str, destination: str, pool: Rule, *, client: str | None
    ) -> list[tuple[Rule, str]]:
        if channel == "sms":
            block, country = number_keys(destination)
            # A number block's and a country's limits are everyone's, so no one address may
            # fill them: a probe's 20 registrations from one address held every code to a
            # block for an hour, and its 180 proven ones every code to Japan. Codes of proven
            # requests count in a share of their own, as in the channel's pool; a client
            # address gets a part of a block's and a country's plain share, IPv6 by its /48
            # (a site's usual allocation: its /64s would each have had a part). Past its part,
            # a proof moves its code to the proven share (citizens/proof.py).
            shared = "proven:" if pool is Rule.GLOBAL_PROVEN else ""
            network = network_key(client) if client is not None and not shared else None
            hits = [(Rule.PREFIX, shared + block)]
            if network is not None:
                hits.append((Rule.PREFIX_CLIENT, f"{network}:{block}"))
                hits.append((Rule.CLIENT_UNVERIFIED, f"sms:{network}"))
            if country != self._home_region:
                hits.append((Rule.COUNTRY, shared + country))
                if network is not None:
                    hits.append((Rule.COUNTRY_CLIENT, f"{network}:{country}"))
        else:
            address = email_key(destination)
            hits = []
            # A domain of one's own with a catch-all inbox (or a wildcard MX: its registrable
            # domain counts) is every address a script wants: a client address has a part of
            # each domain's codes. Only a part, not a limit shared by everyone: codes to
            # made-up addresses would fill that, and hold a whole company's travellers.
            domain = mail_domain(address)
            counted = domain and domain not in self._shared_domains
            if client is not None and pool is not Rule.GLOBAL_PROVEN:
                if counted:
                    hits.append((Rule.EMAIL_DOMAIN_CLIENT, f"{network_key(client)}:{domain}"))
                hits.append((Rule.CLIENT_UNVERIFIED, f"email:{network_key(client)}"))
        return hits

    # ---- the daily SMS budget ------------------------------------------------------------

    def charge_sms_budget(self) -> BudgetCharge:
        """Counts one non-alert SMS against today's budget (UTC day); call it just before sending,
        after take_message. When not allowed, the SMS must not be sent."""
        with self._storage_guard():
            used = self._storage.incr(self._budget_key(), _BUDGET_KEY_LIFE_S)
        allowed = used <= self._budget
        if not allowed:
            MESSAGE_BUDGET_EXHAUSTED.inc()
        charge = BudgetCharge(allowed, used, self._budget, just_spent=used == self._budget + 1)
        if charge.just_spent:
            self.when_budget_spent()
        return charge

    def sms_budget_spent(self) -> bool:
        """Whether today's budget is spent (counts nothing)."""
        with self._storage_guard():
            return self._storage.get(self._budget_key()) >= self._budget

    def codes_left(self) -> dict[tuple[str, str], int]:
        """What each channel's shared pools of codes ("plain": rate_limit_global; "proven":
        rate_limit_global_proven) may still send in their windows, counting nothing: at 0, no
        traveller's code goes by that channel until the window moves (a probe filled the plain
        hour from five /48s, and nothing told anyone). ServiceUnavailable: the storage away."""
        left = {}
        with self._storage_guard():
            for pool, rule in (("plain", Rule.GLOBAL), ("proven", Rule.GLOBAL_PROVEN)):
                for channel in ("sms", "email"):
                    hashed = self._hashed(rule, channel)
                    left[(channel, pool)] = min(
                        self._limiter.get_window_stats(item, rule, hashed).remaining
                        for item in self._rules[rule]
                    )
        return left

    def healthy(self) -> bool:
        """Whether the storage answers (for readiness checks)."""
        try:
            return bool(self._storage.check())
        except self._errors:
            return False

    # ---- inside ---------------------------------------------------------------------------

    def address_lookups(self, client: str, *, citizen_id: str | None = None) -> "AddressLookups":
        """What a request's places by address spend, from a client address (and, for a
        change, a citizen's record): see AddressLookups."""
        return AddressLookups(self, client=client, citizen_id=citizen_id)

    def geocoder_turn(self) -> float:
        """0 when this process may ask the geocoder now (the turn is counted, for every process
        sharing the storage); otherwise the seconds until the next turn."""
        [item] = self._rules[Rule.GEOCODER]
        with self._storage_guard():
            if self._limiter.hit(item, Rule.GEOCODER, "nominatim"):
                return 0.0
            reset = self._limiter.get_window_stats(item, Rule.GEOCODER, "nominatim").reset_time
        return max(0.01, reset - time.time())

    def unverified_key(self, channel: str, client: str) -> str:
        """What a code sent by `channel` for `client` is counted under in
        rate_limit_client_unverified, as kept with the code (a keyed hash: no address is
        stored) to give it back once verified."""
        return self._hashed(Rule.CLIENT_UNVERIFIED, f"{channel}:{network_key(client)}")

    def give_back_unverified(self, kept: str, *, taken_s_ago: float) -> None:
        """A code sent for the client network `kept` (unverified_key) was verified: its share
        of rate_limit_client_unverified comes back."""
        self._give_back_hashed(Rule.CLIENT_UNVERIFIED, kept, taken_s_ago=taken_s_ago)

    def give_back(self, rule: Rule, key: str, *, taken_s_ago: float) -> None:
        """Un-counts one hit of `rule` for `key`, taken `taken_s_ago`, in the windows that
        still hold it. The library has no un-hit: its moving windows are lists, newest first,
        in memory and in Redis, so the entry of each window nearest to when the hit was taken
        goes (another process's of the same moment, maybe: the count is what matters). Any
        other storage keeps the hit."""
        self._give_back_hashed(rule, self._hashed(rule, key), taken_s_ago=taken_s_ago)

    def _give_back_hashed(self, rule: Rule, hashed: str, *, taken_s_ago: float) -> None:
        taken_at = time.time() - taken_s_ago
        with self._storage_guard():
            for item in self._rules[rule]:
                if taken_s_ago >= item.get_expiry():
                    continue  # the hit has left this window already
                window = item.key_for(rule, hashed)
                if isinstance(self._storage, MemoryStorage):
                    with self._storage.locks[window]:
                        if entries := self._storage.events.get(window):
                            offs = [abs(entry.atime - taken_at) for entry in entries]
                            del entries[offs.index(min(offs))]
                elif self._give_back_script is not None:
                    self._give_back_script([self._storage.prefixed_key(window)], [taken_at])
                elif isinstance(self._storage, RedisStorage):  # a cluster: the newest goes
                    self._storage.get_connection().lpop(self._storage.prefixed_key(window))

    def _take(self, keyed: list[_Hit]) -> list[_Hit]:
        # A hit named n times (a request's n look-ups) is one hit of cost n: tested one at a
        # time, each passed, and a refusal left the first ones counted.
        costs = Counter(keyed)
        refused = [hit for hit, n in costs.items() if not self._limiter.test(*_args(hit), cost=n)]
        if not refused:
            for hit, n in costs.items():
                # Each hit is atomic in the storage; one lost to another process after the
                # test leaves the hits before it counted, which errs on the safe side.
                if not self._limiter.hit(*_args(hit), cost=n):
                    return [hit]
        return refused

    def _take_in_script(self, keyed: list[_Hit]) -> list[_Hit]:
        assert isinstance(self._storage, RedisStorage) and self._take_script is not None
        keys, args = [], [time.time()]
        for rule, item, key in keyed:
            keys.append(self._storage.prefixed_key(item.key_for(rule, key)))
            args += [item.amount, item.get_expiry()]
        full = self._take_script(keys, args)
        return [keyed[int(i) - 1] for i in full]

    def _hashed(self, rule: Rule, key: str) -> str:
        return hmac.new(self._key_secret, f"{rule}:{key}".encode(), hashlib.sha256).hexdigest()[:32]

    def _budget_key(self) -> str:
        return f"{self._namespace}/sms-budget/{budget_day()}"

    def _refusal(
        self, refused: list[_Hit], limiter: MovingWindowRateLimiter | None = None
    ) -> TooManyRequests:
        limiter = limiter or self._limiter  # this process's own, for what it counted here
        waits: dict[str, int] = {}
        for rule, item, key in refused:
            if rule in _COUNTED_FOR_ANYONE:
                # The whole window: when the oldest hit ends would date someone else's codes
                # or tries at this contact (a stranger's resend learnt to the second when a
                # code was asked for a number: its owner was registering).
                wait = item.get_expiry()
            else:
                reset = limiter.get_window_stats(item, rule, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
            waits[rule.value] = max(wait, waits.get(rule.value, 0))
        refusal = refusal_of(waits)
        RATE_LIMITED.labels(rule=refusal.rule).inc()
        return refusal

    @contextmanager
    def _storage_guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            log.warning("rate-limit storage unavailable", extra={"error": type(exc).__name__})
            raise ServiceUnavailable(
                "the rate-limit storage is unavailable; nothing was sent, retry later",
                retry_after_s=5,
            ) from exc


def budget_day() -> str:
    """The day the SMS budget counts, in UTC."""
    return datetime.now(UTC).date().isoformat()


def seconds_to_next_budget_day() -> int:
    """Until the SMS budget's next day begins (UTC midnight)."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


def _open_storage(uri: str) -> Storage:
    options: dict[str, float | str] = {}
    if uri.startswith("redis"):
        options = {
            "key_prefix": "anjeon",
            "socket_timeout": _STORAGE_TIMEOUT_S,
            "socket_connect_timeout": _STORAGE_TIMEOUT_S,
        }
    storage = storage_from_string(uri, wrap_exceptions=True, **options)
    assert isinstance(storage, Storage)  # a synchronous storage: the scheme has no async+
    return storage


# Rules that are not settings: a proof of work's challenge lives 10 minutes (citizens.proof).
_FIXED = {Rule.PROOF: "1/15minute", Rule.DUTY_SUMMARY: "1/10minute"}


def _items(settings: Settings, rule: Rule, namespace: str) -> list[RateLimitItem]:
    if rule is Rule.GEOCODER:  # the geocoder's rate is the whole service's, however many processes
        text = f"{settings.geocoder_per_second}/second"
    else:
        text = _FIXED.get(rule) or getattr(settings, f"rate_limit_{rule.value}")
    items = parse_many(text)
    for item in items:
        item.namespace = namespace
    return items


def _as_tuple(errors: type[Exception] | tuple[type[Exception], ...]) -> tuple[type[Exception], ...]:
    return errors if isinstance(errors, tuple) else (errors,)


# ---- keys -----------------------------------------------------------------------------------


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The client's address: the socket's peer; when the peer is a trusted proxy, the right-most
    X-Forwarded-For hop that is not one (hops left of it are whatever the client wrote). Several
    X-Forwarded-For headers are passed joined by commas, in the order received."""
    networks = [ip_network(entry, strict=False) for entry in trusted_proxies]
    current = _ip(peer)
    if current is None:
        return peer
    if not forwarded_for or not any(current in network for network in networks):
        return str(current)
    for hop in reversed(forwarded_for.split(",")):
        address = _ip(hop)
        if address is None:
            break  # no proxy of ours wrote this: nothing left of it can be believed
        current = address
        if not any(address in network for network in networks):
            break
    return str(current)


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def address_key(address: str, *, ipv6_prefix: int = 64) -> str:
    """The key a client address counts under: IPv6 by its /64, which one host usually holds
    (or by `ipv6_prefix`)."""
    parsed = _ip(address)
    if isinstance(parsed, IPv6Address):
        return str(ip_network(f"{parsed}/{ipv6_prefix}", strict=False))
    return str(parsed) if parsed else address


def network_key(address: str) -> str:
    """The key a client's network counts under: IPv6 by its /48, a site's usual allocation
    (a /48 holds 65,536 /64s, each otherwise a client of its own); IPv4 by the address, which
    a carrier's NAT already shares among many."""
    return address_key(address, ipv6_prefix=48)


def _client_hits(client: str) -> list[tuple[Rule, str]]:
    """A registration's or a resend's hits on its client: the address, and for IPv6 its /48."""
    hits = [(Rule.CLIENT, address_key(client))]
    if isinstance(_ip(client), IPv6Address):
        hits.append((Rule.CLIENT_NETWORK, network_key(client)))
    return hits


def _refused_change_hits(client: str, citizen_id: str) -> list[tuple[Rule, str]]:
    """A change refused as bad input: the record's count from the address, and the address's."""
    address = address_key(client)
    return [
        (Rule.CHANGE_REFUSED, f"{address}:{citizen_id}"),
        (Rule.CHANGE_REFUSED_ADDRESS, address),
    ]


def _proven_hits(client: str) -> list[tuple[Rule, str]]:
    """A proven request's hits on its client: the address (IPv6: its /64), and for IPv6 its
    /48 at a higher ceiling. Per /64 alone, a /48 (a tunnel broker gives one away) was 65,536
    ceilings: a probe stored registrations from one without end, a proof each."""
    hits = [(Rule.CLIENT_PROVEN, address_key(client))]
    if isinstance(_ip(client), IPv6Address):
        hits.append((Rule.CLIENT_PROVEN_NETWORK, network_key(client)))
    return hits


def number_keys(e164: str) -> tuple[str, str]:
    """(block, country) of a phone number: the number without its last 4 digits
    ('+82101234' for +821012345678), and its region ('KR'), or its calling code ('+881') when no
    one country has it."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number in E.164 form") from exc
    national = phonenumbers.national_significant_number(number)
    block = f"+{number.country_code}{national[:-4]}"
    region = phonenumbers.region_code_for_number(number)
    country = region if region not in (None, "ZZ", "001") else f"+{number.country_code}"
    return block, country


# Gmail delivers every dotting of a name to one inbox, under either domain: six spellings of
# one address were six codes to it within seconds (probe), past its limit and its cooldown.
_DOTS_IGNORED = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


# The list the package ships (nothing is fetched); its ICANN part only: a private suffix such
# as github.io would make each user's subdomain a domain of its own.
_SUFFIXES = PublicSuffixList(only_icann=True)


def mail_domain(address: str) -> str:
    """The registrable domain of an e-mail address (`bot@s1.evil.example` → `evil.example`,
    `kim@mail.example.co.kr` → `example.co.kr`); the domain itself when it is a public suffix
    or an address literal (`[192.0.2.1]`, which registration refuses anyway)."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain.startswith("[") or _ip(domain) is not None:
        return domain
    return _SUFFIXES.privatesuffix(domain) or domain


def email_key(address: str) -> str:
    """An e-mail address as it counts: case and +tags dropped, as mailboxes mostly ignore them,
    and Gmail's dots."""
    local, _, domain = address.strip().lower().rpartition("@")
    if not local:
        return address.strip().lower()
    local = local.split("+", 1)[0]
    if domain in _DOTS_IGNORED:
        local, domain = local.replace(".", ""), _DOTS_IGNORED[domain]
    return f"{local}@{domain}"


def _contact_key(channel: str, destination: str) -> str:
    """What rate_limit_contact counts a contact under: the number, or the e-mail address as
    email_key reads it (one inbox under its spellings)."""
    return f"sms:{destination}" if channel == "sms" else f"email:{email_key(destination)}"
