"""Contacts through the real send activity and store (SQLite and PostgreSQL): phone numbers go out
in E.164 whatever form the shop stored, unusable numbers and addresses fall to the fallback
channel or are skipped `no_contact` with the reason recorded, and opt-outs match either form."""

from __future__ import annotations

import pytest

from core.contacts import UnusableContact, email_address, sms_number
from store import queries
from tests.helpers import customer
from tests.test_policy import NOON, request, rows, save, sent_lines


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("13800138000", "CN", "+8613800138000"),
        ("+86 138-0013-8000", "CN", "+8613800138000"),
        ("008613800138000", "CN", "+8613800138000"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("+14155550123", "CN", "+14155550123"),
        ("07400 123456", "GB", "+447400123456"),
    ],
)
def test_numbers_are_normalised_to_e164(raw, region, e164):
    assert sms_number(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "why"),
    [("12345", "not a valid number"), ("010-12345678", "not a mobile number"), ("call me", "not a phone number")],
)
def test_unusable_numbers_are_named(raw, why):
    with pytest.raises(UnusableContact, match=why):
        sms_number(raw, "CN")


def test_emails_are_checked_without_the_network():
    assert email_address(" Wang.Fang@Example.COM ") == "wang.fang@example.com"
    for bad in ("bad@", "no-at-sign", "a@localhost", "a b@example.com"):
        with pytest.raises(UnusableContact, match="is not usable"):
            email_address(bad)


def test_a_national_number_goes_out_in_e164(store, send, outbox):
    save(store, customer(phone="138 0013 8000"))
    assert send(request()).channel == "sms"
    [line] = sent_lines(outbox)
    assert line["to"] == "+8613800138000"
    assert rows(store)[0].address == "+8613800138000"


def test_the_customers_region_reads_their_number(store, send, outbox):
    save(store, customer(phone="(415) 555-0123", locale="en", region="US"))
    send(request())
    assert sent_lines(outbox)[0]["to"] == "+14155550123"


def test_a_bad_number_falls_back_to_email_and_says_why(store, send, outbox):
    save(store, customer(phone="010-12345678"))
    outcome = send(request())
    assert (outcome.status, outcome.channel) == ("sent", "email")
    [row] = rows(store)
    assert row.error == "phone '+861012345678' is not a mobile number"  # a valid landline, stored in E.164


def test_nothing_usable_is_skipped_no_contact_with_the_reasons(store, send, outbox):
    save(store, customer(phone="12345", email="wangfang@"))
    outcome = send(request())
    assert (outcome.status, outcome.reason) == ("skipped", "no_contact")
    [row] = rows(store)
    assert "phone '12345' is not a valid number" in row.error and "email 'wangfang@' is not usable" in row.error
    assert sent_lines(outbox) == []


def test_a_stop_from_twilio_blocks_a_number_stored_in_national_form(store, send):
    """Twilio reports the sender in E.164; the shop stored the number without +86."""
    save(store, customer(phone="13800138000", email=None))
    with store.transaction() as session:
        queries.add_suppression(session, "sms", "+8613800138000", "all", "replied 'STOP'", NOON)
    outcome = send(request())
    assert (outcome.status, outcome.reason) == ("skipped", "unsubscribed")
