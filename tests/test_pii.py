"""PII recognisers: table-driven positives and negatives, checksums, and generated cards embedded in text."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchpoint.router.classifiers.pii import (
    PiiEntity,
    find_pii,
    iban_valid,
    luhn_valid,
    pii_types,
)

POSITIVES = [
    # (text, type, exact matched text, kind)
    ("write to john.doe+news@example.co.uk today", "email", "john.doe+news@example.co.uk", ""),
    ("Contact: A_B@mail-server.example.org.", "email", "A_B@mail-server.example.org", ""),
    ("call +1 (415) 555-0132 tonight", "phone", "+1 (415) 555-0132", ""),
    ("London office +44 20 7946 0958.", "phone", "+44 20 7946 0958", ""),
    ("Paris: +33 1 23 45 67 89", "phone", "+33 1 23 45 67 89", ""),
    ("Berlin +49-30-12345678", "phone", "+49-30-12345678", ""),
    ("my number is +14155550132", "phone", "+14155550132", ""),
    ("office (415) 555-0132 ext", "phone", "(415) 555-0132", ""),
    ("cell 415-555-0199.", "phone", "415-555-0199", ""),
    ("dial 415.555.0199 now", "phone", "415.555.0199", ""),
    ("toll free 1-800-555-0199", "phone", "1-800-555-0199", ""),
    ("UK landline 020 7946 0958", "phone", "020 7946 0958", ""),
    ("mobile 07700 900123!", "phone", "07700 900123", ""),
    ("Manchester 0161 496 0000", "phone", "0161 496 0000", ""),
    ("FR 01 23 45 67 89", "phone", "01 23 45 67 89", ""),
    ("visa 4111 1111 1111 1111 exp 12/27", "credit_card", "4111 1111 1111 1111", ""),
    ("mc 5500-0000-0000-0004", "credit_card", "5500-0000-0000-0004", ""),
    ("mc2 2223003122003222", "credit_card", "2223003122003222", ""),
    ("amex 3782 822463 10005", "credit_card", "3782 822463 10005", ""),
    ("amex 378282246310005.", "credit_card", "378282246310005", ""),
    ("discover 6011111111111117", "credit_card", "6011111111111117", ""),
    ("jcb 3530111333300000", "credit_card", "3530111333300000", ""),
    ("diners 30569309025904", "credit_card", "30569309025904", ""),
    ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32", ""),
    ("DE89370400440532013000.", "iban", "DE89370400440532013000", ""),
    ("FR1420041010050500013M02606", "iban", "FR1420041010050500013M02606", ""),
    ("iban: nl91abna0417164300", "iban", "nl91abna0417164300", ""),
    ("NO9386011117947", "iban", "NO9386011117947", ""),
    ("SSN 123-45-6789.", "national_id", "123-45-6789", "us_ssn"),
    ("ssn 536 22 1234", "national_id", "536 22 1234", "us_ssn"),
    ("NINO AB 12 34 56 C", "national_id", "AB 12 34 56 C", "uk_nino"),
    ("ni number JG103759A", "national_id", "JG103759A", "uk_nino"),
    ("DNI 12345678Z", "national_id", "12345678Z", "es_dni"),
    ("NIE X1234567L", "national_id", "X1234567L", "es_dni"),
    ("server 192.168.1.20:8080", "ip_address", "192.168.1.20", ""),
    ("from 8.8.8.8.", "ip_address", "8.8.8.8", ""),
    ("v6 2001:db8::8a2e:370:7334 ok", "ip_address", "2001:db8::8a2e:370:7334", ""),
    ("loopback ::1", "ip_address", "::1", ""),
    ("link fe80::1ff:fe23:4567:890a%", "ip_address", "fe80::1ff:fe23:4567:890a", ""),
    ("mapped ::ffff:192.0.2.128", "ip_address", "::ffff:192.0.2.128", ""),
]

NEGATIVES = [
    "The laptop costs $1,299.99 (or 1299 dollars) and ships in 3-5 days.",
    "Order #1234567890123456 was placed on 2024-01-15 at 10:30:45.",
    "Upgrade from version 1.2.3 to 2.0.1-rc1; pi is 3.14159265358979.",
    "World population is about 8,000,000,000; zip code 94103; due 12/31/2023.",
    "ISBN 978-0-306-40615-7 and ISBN-13 9780306406157.",
    "Call 1234567890 if the plain number is a phone (it is not), or 5551234.",
    "In C++ write std::vector<int> and a::b::c; the ratio was 16:9:4.",
    "999.999.999.999 and 256.1.1.1 are not IPv4 addresses; 1.2.3 is a version.",
    "4111 1111 1111 1112 fails Luhn; 1234 5678 9012 3456 too; 0000 0000 0000 0000 is padding.",
    "Invalid SSNs: 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000.",
    "Invalid NINOs: QQ123456C, GB123456A, DA123456A, AB123456E.",
    "Bad IBAN GB82 WEST 1234 5698 7654 33 and DE89370400440532013001.",
    "The DNI 12345678A has the wrong letter.",
    "Timestamps 1700000000 and 1700000000123; coordinates 51.5074, -0.1278.",
    "Matrix [[1, 2], [3, 4]]; 2^31 - 1 = 2147483647; 10^9+7 = 1000000007.",
    "Solve x^2 - 5x + 6 = 0. A. 1 B. 2 C. 3 D. 6 Answer:",
    "user@localhost is not an address with a domain; neither is @mention or a@b.",
    "",
]


@pytest.mark.parametrize(("text", "type_", "match", "kind"), POSITIVES)
def test_positive(text: str, type_: str, match: str, kind: str) -> None:
    found = [e for e in find_pii(text) if e.type == type_]
    assert [text[e.start : e.end] for e in found] == [match], find_pii(text)
    assert found[0].kind == kind
    assert type_ in pii_types(text)
    if kind:
        assert kind in pii_types(text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative(text: str) -> None:
    assert find_pii(text) == (), [(e, text[e.start : e.end]) for e in find_pii(text)]
    assert pii_types(text) == frozenset()


def test_several_entities_sorted_without_overlaps() -> None:
    text = "Jane (jane@example.com, +44 20 7946 0958) paid with 4111-1111-1111-1111 from 10.0.0.7."
    found = find_pii(text)
    assert [e.type for e in found] == ["email", "phone", "credit_card", "ip_address"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert isinstance(found[0], PiiEntity)
    assert pii_types(text) == {"email", "phone", "credit_card", "ip_address"}


def test_card_is_not_also_a_phone() -> None:
    assert [e.type for e in find_pii("card 4111 1111 1111 1111")] == ["credit_card"]


def test_checksums() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("GB82WEST1234569876543")  # wrong length for GB
    assert not iban_valid("ZZ82WEST12345698765432")  # unknown country


def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["4", "51", "55", "2221", "2720", "6011", "3530"]),
    rest=st.text(alphabet="0123456789", min_size=14, max_size=14),
    sep=st.sampled_from(["", " ", "-"]),
    before=st.sampled_from(["", "my card is ", "Card: ", "(", "pay with "]),
    after=st.sampled_from(["", ".", " thanks", ")", ", exp 09/29"]),
)
def test_generated_luhn_valid_cards_are_found(prefix: str, rest: str, sep: str, before: str, after: str) -> None:
    number = _luhn_complete((prefix + rest)[:15])
    grouped = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text = before + grouped + after
    found = [e for e in find_pii(text) if e.type == "credit_card"]
    assert [text[e.start : e.end] for e in found] == [grouped]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_luhn_invalid_numbers_are_not_cards(digits: str) -> None:
    if luhn_valid(digits):
        digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    assert "credit_card" not in pii_types(f"number {digits} here")


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False), st.integers(min_value=0, max_value=10**12))
def test_prices_and_plain_numbers_are_never_pii(price: float, n: int) -> None:
    assert pii_types(f"It costs ${price:,.2f} or {n} units ({n:,}) on 2023-{n % 12 + 1:02d}-15.") == frozenset()


def test_throughput_on_a_long_prompt() -> None:
    """The recognisers run in the router: linear in the prompt (1-3 MB/s measured here); a generous bound for CI."""
    para = (
        "Please summarise the quarterly report: revenue grew 12.5% to $4,312,000 in Q3 2024, margins 31.2%. "
        "Contact the CFO at cfo@example.com or +1 (415) 555-0132 for details on invoice 2024-0042. "
    )
    text = para * (100_000 // len(para))
    find_pii(text)
    start = time.perf_counter()
    found = find_pii(text)
    elapsed = time.perf_counter() - start
    assert {e.type for e in found} == {"email", "phone"}
    assert len(found) > 1000
    assert elapsed < 1.0, f"{elapsed * 1000:.1f} ms for {len(text)} chars"
