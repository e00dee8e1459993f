"""Phone numbers and e-mail addresses: parsed, normalised, and checked for what we send them."""

import math
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import NumberParseException, PhoneNumberType

# Letters would be read as a keypad vanity number (1-800-FLOWERS); nobody registers one for alerts.
# A "+" only before the country code, bracketed or not ("(+82) 10 …" is common).
_PHONE_CHARACTERS = re.compile(r"^\(?\+?[0-9 ().\-]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SMS_CAPABLE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


class ContactError(ValueError):
    pass


def normalise_phone(raw: str, *, default_region: str) -> str:
    """E.164 form of a number written in any common way; national numbers read in default_region."""
    if not _PHONE_CHARACTERS.match(raw.strip()):
        raise ContactError(
            "only digits, spaces, '-', '.', brackets, and one '+' before the country code"
        )
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        reason = str(exc).split(") ", 1)[-1].rstrip(".").lower()
        raise ContactError(f"not a phone number: {reason}") from exc
    if not phonenumbers.is_valid_number(number):
        raise ContactError("not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def can_receive_sms(e164: str) -> bool:
    return phonenumbers.number_type(phonenumbers.parse(e164)) in _SMS_CAPABLE


def normalise_email(raw: str) -> str:
    if _CONTROL.search(raw):
        raise ContactError("control characters (such as line breaks) are not allowed")
    try:
        # ASCII as sent on the wire: a domain in Korean letters as its IDNA form, and none
        # before the @ (SMTPUTF8; smtplib could not send the code to either, so the person
        # could never verify it).
        return validate_email(raw, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError as exc:
        raise ContactError(str(exc)) from exc


def mask_phone(e164: str) -> str:
    """+821012345678 -> +82******5678, for staff views and logs: the first two digits, and at
    most four of the last, with at least half of the digits hidden (a review: Tokelau's
    +6907290 showed as +69*7290, nearly the whole number)."""
    digits = len(e164) - 1
    hidden = max(digits - 6, math.ceil(digits / 2))
    shown = max(digits - 2 - hidden, 0)
    return e164[:3] + "*" * (digits - 2 - shown) + (e164[-shown:] if shown else "")


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"
