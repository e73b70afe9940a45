"""PII recognisers: regular expressions for candidates, checksums and registries to confirm them.

No model is involved. Every recogniser finds candidates with a compiled regular expression and keeps only the ones
that pass a structural check, so that ordinary numbers (prices, dates, order numbers, versions) are not reported:

- ``email``: local@domain.tld (a dotted domain with a 2+ letter TLD).
- ``phone``: ``+<country code>`` numbers with 8-15 digits (E.164 length), North American numbers with separators
  (``(415) 555-0132``, ``415-555-0132``, ``1-800-555-0199``), trunk-prefixed national numbers with separators
  (``020 7946 0958``, ``07700 900123``, ``01 23 45 67 89``). A run of digits without separators and without ``+`` is
  never a phone number.
- ``credit_card``: 13-19 digits, optionally grouped by single spaces or dashes (one kind of separator), passing the
  Luhn check and starting with a card network prefix (Visa, Mastercard incl. 2-series, Amex, Discover, JCB, Diners,
  UnionPay, Maestro).
- ``iban``: country code + 2 check digits + BBAN, the exact length registered for that country, ISO 7064 mod-97 = 1.
- ``national_id``: ``us_ssn`` (AAA-GG-SSSS with dashes or spaces; area 000, 666 and 900-999, group 00 and serial 0000
  are never issued and are rejected), ``uk_nino`` (two prefix letters under HMRC's allocation rules, six digits, suffix
  A-D) and ``es_dni`` (Spanish DNI/NIE, 8 digits + mod-23 check letter).
- ``ip_address``: IPv4 and IPv6 addresses that :mod:`ipaddress` accepts.

Overlaps are resolved in that order of confidence: iban, credit_card, email, national_id, ip_address, phone; a later
match overlapping an earlier one is dropped (so a card number is never also reported as a phone number).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
IBAN = "iban"
NATIONAL_ID = "national_id"
IP_ADDRESS = "ip_address"
PII_TYPES = (EMAIL, PHONE, CREDIT_CARD, IBAN, NATIONAL_ID, IP_ADDRESS)


@dataclass(frozen=True, slots=True)
class PiiEntity:
    """One recognised entity: ``text[start:end]``. ``kind`` refines ``type`` (e.g. ``us_ssn`` for national_id)."""

    type: str
    start: int
    end: int
    kind: str = ""


# --- e-mail ------------------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)

# --- payment cards -----------------------------------------------------------------------------------------------
_CARD = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){12,18}(?![\w/]|[.,]\d|-\d)")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers; ``digits`` holds only 0-9."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_network(digits: str) -> bool:
    """True when the number starts with a prefix of a major card network and has a length that network issues."""
    n = len(digits)
    p2, p4, p6 = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 222100 <= p6 <= 272099:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= p6 <= 622925:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39) or p4 == 3095:
        return 14 <= n <= 19  # Diners Club
    if p2 == 62 or p2 == 81:
        return 16 <= n <= 19  # UnionPay
    if p2 in (50, 56, 57, 58, 67) or p2 == 63:
        return 12 <= n <= 19  # Maestro
    return False


def _card_ok(candidate: str) -> bool:
    seps = {c for c in candidate if c in " -"}
    if len(seps) > 1 or "  " in candidate or "--" in candidate:
        return False
    digits = candidate.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if seps:
        groups = re.split(r"[ -]", candidate)
        # Cards are printed in groups of 4 (4-6-5 / 4-6-4 for Amex and Diners); reject odd groupings like 3-3-4-...
        if any(len(g) < 4 for g in groups[:-1]) or len(groups[-1]) < 1 or len(groups) > 5:
            return False
    return _card_network(digits) and luhn_valid(digits)


# --- IBAN -------------------------------------------------------------------------------------------------------
# IBAN lengths per country, from the SWIFT IBAN registry (ISO 13616); RU/BY/etc. included as registered.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})(?=[ ]?[A-Za-z0-9])")


def iban_valid(iban: str) -> bool:
    """Registered length for the country and ISO 7064 mod-97-10 checksum (the rearranged number mod 97 is 1)."""
    s = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum() or not s.isascii():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _find_ibans(text: str) -> list[PiiEntity]:
    out = []
    for m in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(m.group(1).upper())
        if length is None:
            continue
        # Take exactly `length` alphanumerics from the start, allowing single spaces between them.
        i, count, n = m.start(), 0, len(text)
        while i < n and count < length:
            c = text[i]
            if c.isascii() and c.isalnum():
                count += 1
                i += 1
            elif c == " " and count >= 4 and i + 1 < n and text[i + 1] != " ":
                i += 1
            else:
                break
        if count != length or (i < n and text[i].isascii() and text[i].isalnum()):
            continue
        if iban_valid(text[m.start() : i]):
            out.append(PiiEntity(IBAN, m.start(), i))
    return out


# --- national identifiers ----------------------------------------------------------------------------------------
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-]|[.,]\d)")
_NINO = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2}) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])(?![A-Za-z0-9])")
_NINO_BAD_PREFIX = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
_DNI = re.compile(r"(?<![\w-])([XYZ]?)(\d{7,8})-?([A-Z])(?![\w-])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """US SSN ranges never issued: area 000, 666, 900-999; group 00; serial 0000 (SSA randomisation rules)."""
    a = int(area)
    return a != 0 and a != 666 and a < 900 and group != "00" and serial != "0000"


def nino_valid(prefix: str) -> bool:
    """HMRC: first letter not D F I Q U V, second not D F I O Q U V, and some prefixes are never allocated."""
    return prefix[0] not in "DFIQUV" and prefix[1] not in "DFIOQUV" and prefix not in _NINO_BAD_PREFIX


def dni_valid(prefix: str, number: str, letter: str) -> bool:
    """Spanish DNI (8 digits) / NIE (X|Y|Z + 7 digits): the letter is TRWAGMYFPDXBNJZSQVHLCKE[n mod 23]."""
    if prefix:
        if len(number) != 7:
            return False
        number = str("XYZ".index(prefix)) + number
    elif len(number) != 8:
        return False
    return _DNI_LETTERS[int(number) % 23] == letter


def _find_national_ids(text: str) -> list[PiiEntity]:
    out = []
    for m in _SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            out.append(PiiEntity(NATIONAL_ID, m.start(), m.end(), "us_ssn"))
    for m in _NINO.finditer(text):
        if nino_valid(m.group(1)):
            out.append(PiiEntity(NATIONAL_ID, m.start(), m.end(), "uk_nino"))
    for m in _DNI.finditer(text):
        if dni_valid(m.group(1), m.group(2), m.group(3)):
            out.append(PiiEntity(NATIONAL_ID, m.start(), m.end(), "es_dni"))
    return out


# --- IP addresses ------------------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])")


def _find_ips(text: str) -> list[PiiEntity]:
    out = []  # IPv6 first: an IPv4-mapped IPv6 address contains an IPv4 address
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            s = m.group()
            # A time (12:30:45) or a C++ scope is not an address: require a digit and ipaddress's approval.
            if not any(c.isdigit() for c in s) or s.count(":") < 2:
                continue
            try:
                ipaddress.IPv6Address(s)
            except ValueError:
                continue
            out.append(PiiEntity(IP_ADDRESS, m.start(), m.end()))
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            out.append(PiiEntity(IP_ADDRESS, m.start(), m.end()))
    return out


# --- phone numbers -----------------------------------------------------------------------------------------------
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}(?![\w]|[.,-]\d)")
_PHONE_NANP = re.compile(
    r"(?<![\w+(.-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}([ .-]))[2-9]\d{2}[ .-]\d{4}(?![\w]|[.,-]\d)"
)
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+(.-])(?:0[1-9](?:[ .-]\d{2}){4}|0[1-9]\d{1,3}[ -]\d{3,8}(?:[ -]\d{3,4})?)(?![\w]|[.,-]\d)"
)


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _find_phones(text: str) -> list[PiiEntity]:
    out = []
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            s = m.group()
            if 8 <= _digit_count(s) <= 15:
                out.append(PiiEntity(PHONE, m.start(), m.end()))
    for m in _PHONE_NANP.finditer(text):
        out.append(PiiEntity(PHONE, m.start(), m.end()))
    for m in _PHONE_NATIONAL.finditer(text):
        if 9 <= _digit_count(m.group()) <= 12:
            out.append(PiiEntity(PHONE, m.start(), m.end()))
    return out


def _find_emails(text: str) -> list[PiiEntity]:
    if "@" not in text:
        return []
    return [PiiEntity(EMAIL, m.start(), m.end()) for m in _EMAIL.finditer(text)]


def _find_cards(text: str) -> list[PiiEntity]:
    return [PiiEntity(CREDIT_CARD, m.start(), m.end()) for m in _CARD.finditer(text) if _card_ok(m.group())]


_FINDERS = (_find_ibans, _find_cards, _find_emails, _find_national_ids, _find_ips, _find_phones)


def find_pii(text: str) -> tuple[PiiEntity, ...]:
    """All recognised entities in ``text``, sorted by position; overlapping lower-confidence matches are dropped."""
    if not text:
        return ()
    taken: list[PiiEntity] = []  # sorted by start, never overlapping: only the neighbours need checking
    starts: list[int] = []
    for finder in _FINDERS:
        for e in finder(text):
            i = bisect.bisect_left(starts, e.start)
            if (i > 0 and taken[i - 1].end > e.start) or (i < len(taken) and taken[i].start < e.end):
                continue
            taken.insert(i, e)
            starts.insert(i, e.start)
    return tuple(taken)


def pii_types(text: str) -> frozenset[str]:
    """The entity types present: the coarse names in PII_TYPES plus each national id's kind (``us_ssn`` ...)."""
    found: set[str] = set()
    for e in find_pii(text):
        found.add(e.type)
        if e.kind:
            found.add(e.kind)
    return frozenset(found)
