"""Contacts as providers need them: a customer's address on a channel, in the form core.contacts
gives (E.164 phone numbers, normalised email addresses), or core.contacts.UnusableContact naming
why not."""

from __future__ import annotations

from core.contacts import email_address, region_of, sms_number
from core.records import Customer


def address_for(customer: Customer, channel: str, default_region: str) -> str | None:
    """The customer's address on `channel`, normalised; None when they have none; UnusableContact
    when the one they have cannot be delivered to. National phone numbers are read in the
    customer's region, else `default_region` (the shop's, Settings.default_region)."""
    if channel == "sms":
        return sms_number(customer.phone, region_of(customer, default_region)) if customer.phone else None
    if channel == "email":
        return email_address(customer.email) if customer.email else None
    return customer.customer_id  # webhook and outbox address the customer by id
