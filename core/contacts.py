"""Contacts in one form: phone numbers in E.164 (`phonenumbers`, the customer's region as the
default for national numbers) and email addresses checked for syntax and lower-cased
(`email-validator`, no network look-ups). The customer record is stored in this form
(store.queries.upsert_customer), so suppressions, message addresses and the record name a
contact alike and erasure finds every copy; the send policy (rules.contacts) reads it too.
An unusable contact is named with the reason, never raised into a crash."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneNumberType

from core.records import Customer

#: Numbers that cannot take an SMS whatever the provider.
NOT_FOR_SMS = {PhoneNumberType.FIXED_LINE, PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOICEMAIL}


class UnusableContact(ValueError):
    """A phone number or email address no provider can deliver to; the message names it and why."""


def region_of(customer: Customer, default: str) -> str:
    """The region national phone numbers are read in: the customer's, else their locale's
    (zh-CN → CN), else `default`, the shop's (Settings.default_region)."""
    if customer.region:
        return customer.region.upper()
    _, _, country = customer.locale.partition("-")
    return country.upper() if len(country) == 2 else default


def _parsed(raw: str, region: str) -> phonenumbers.PhoneNumber:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as err:
        raise UnusableContact(f"phone {raw!r} is not a phone number: {err}") from None
    if not phonenumbers.is_valid_number(number):
        raise UnusableContact(f"phone {raw!r} is not a valid number (read in region {region})")
    return number


@lru_cache(maxsize=4096)
def sms_number(raw: str, region: str) -> str:
    """`raw` in E.164 (+8613800138000), or UnusableContact (also for a number that takes no SMS)."""
    number = _parsed(raw, region)
    if phonenumbers.number_type(number) in NOT_FOR_SMS:
        raise UnusableContact(f"phone {raw!r} is not a mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=4096)
def email_address(raw: str) -> str:
    """`raw` normalised (the domain in IDNA form kept readable, the whole address lower-case, as
    providers compare addresses), or UnusableContact. Syntax only: no DNS look-up."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as err:
        raise UnusableContact(f"email {raw!r} is not usable: {err}") from None


def canonical_phone(raw: str, region: str) -> str:
    """A valid number in E.164 whatever its type (a landline too: storing is not sending); one
    that cannot be read is kept as typed, for the send policy to name as unusable."""
    try:
        return phonenumbers.format_number(_parsed(raw, region), phonenumbers.PhoneNumberFormat.E164)
    except UnusableContact:
        return raw


def canonical_email(raw: str) -> str:
    """The address normalised and lower-cased; one that is not an address is kept as typed."""
    try:
        return email_address(raw)
    except UnusableContact:
        return raw


def canonical_contacts(customer: Customer, default_region: str) -> Customer:
    """The customer with their phone and email in the stored form (canonical_phone, canonical_email)."""
    changes = {}
    if customer.phone:
        changes["phone"] = canonical_phone(customer.phone, region_of(customer, default_region))
    if customer.email:
        changes["email"] = canonical_email(customer.email)
    changed = {k: v for k, v in changes.items() if v != getattr(customer, k)}
    return customer.model_copy(update=changed) if changed else customer


def phone_forms(raw: str, regions: list[str]) -> set[str]:
    """Every form the number may be stored in: as typed, stripped, and E.164 read in each region
    (with a sendable one's form from sms_number among them). For erasure, which must find every copy."""
    forms = {raw, raw.strip()}
    for region in regions:
        forms.add(canonical_phone(raw, region))
    return forms


def email_forms(raw: str) -> set[str]:
    """Every form the address may be stored in: as typed, lower-cased, and normalised."""
    return {raw, raw.strip(), raw.strip().lower(), canonical_email(raw)}
