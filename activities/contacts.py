"""Contacts as providers need them: phone numbers in E.164 (`phonenumbers`, the customer's region
as the default for national numbers) and email addresses checked for syntax (`email-validator`,
no network look-ups). An unusable contact is named with the reason, never raised into a crash."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneNumberType

from core.records import Customer

#: Numbers that cannot take an SMS whatever the provider.
NOT_FOR_SMS = {PhoneNumberType.FIXED_LINE, PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOICEMAIL}
DEFAULT_REGION = "CN"


class UnusableContact(ValueError):
    """A phone number or email address no provider can deliver to; the message names it and why."""


def region_of(customer: Customer, default: str = DEFAULT_REGION) -> str:
    """The region national phone numbers are read in: the customer's, else their locale's
    (zh-CN → CN), else the shop's default."""
    if customer.region:
        return customer.region.upper()
    _, _, country = customer.locale.partition("-")
    return country.upper() if len(country) == 2 else default


@lru_cache(maxsize=4096)
def sms_number(raw: str, region: str) -> str:
    """`raw` in E.164 (+8613800138000), or UnusableContact."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as err:
        raise UnusableContact(f"phone {raw!r} is not a phone number: {err}") from None
    if not phonenumbers.is_valid_number(number):
        raise UnusableContact(f"phone {raw!r} is not a valid number (read in region {region})")
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


def address_for(customer: Customer, channel: str, default_region: str = DEFAULT_REGION) -> str | None:
    """The customer's address on `channel`, normalised; None when they have none; UnusableContact
    when the one they have cannot be delivered to."""
    if channel == "sms":
        return sms_number(customer.phone, region_of(customer, default_region)) if customer.phone else None
    if channel == "email":
        return email_address(customer.email) if customer.email else None
    return customer.customer_id  # webhook and outbox address the customer by id
