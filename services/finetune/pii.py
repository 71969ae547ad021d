"""PII scrubbing of training text (pure): what a fine-tuned model must never learn to repeat.

Each kind is found by a regular expression and replaced by a placeholder, in this order (earlier kinds
win where matches overlap):

- ``[EMAIL]``: ``local@domain.tld``: a local part of letters, digits and ``._%+-``, a dotted domain,
  a TLD of 2+ letters.
- ``[IBAN]``: 2 capital letters, 2 check digits, then 11-30 letters or digits, optionally in groups of 4
  separated by single spaces (``DE89 3704 0044 0532 0130 00``).
- ``[CARD]``: 13-19 digits, optionally separated by single spaces or dashes (``4111 1111 1111 1111``);
  no Luhn check, so any card-like run goes.
- ``[PHONE]``: an optional ``+country`` code and ``(area)``, then digit groups (2-4 digits first, 2-8
  after) separated by spaces, dots or dashes, 7-15 digits in all (``+49 30 1234567``,
  ``(555) 123-4567``, ``555.123.4567``), or ``+`` and 7-15 digits. ISO dates (``2024-05-01``), dotted
  numbers other than 3.3.4 (versions, IP addresses) and runs under 7 digits are left alone.

The rules lean towards scrubbing: a long digit run that is not a card (an order number) is removed too,
which costs a training example a number, never a leak.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,8}){1,4}(?![\w.-]\d|\w)"
    r"|(?<![\w+])\+\d{7,15}\b"
)
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PHONE_DIGITS = (7, 15)


@dataclass
class ScrubReport:
    """How many of each kind were replaced (summed over the texts scrubbed with it)."""

    counts: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.counts.values())


def _phone(match: re.Match[str], report: ScrubReport) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if ISO_DATE.match(text) or not PHONE_DIGITS[0] <= digits <= PHONE_DIGITS[1]:
        return text
    dotted_only = "." in text and not any(c in text for c in "(+- ")
    # Dotted numbers are phones only in the 3.3.4 form (555.123.4567), not versions or IPs.
    if dotted_only and [len(g) for g in text.split(".")] != [3, 3, 4]:
        return text
    report.counts["phone"] += 1
    return "[PHONE]"


def _counted(kind: str, placeholder: str, report: ScrubReport) -> Callable[[re.Match[str]], str]:
    def replace(_: re.Match[str]) -> str:
        report.counts[kind] += 1
        return placeholder

    return replace


def scrub(text: str, report: ScrubReport | None = None) -> str:
    """`text` with emails, IBANs, card-like numbers and phone numbers replaced by placeholders."""
    report = report if report is not None else ScrubReport()
    text = EMAIL.sub(_counted("email", "[EMAIL]", report), text)
    text = IBAN.sub(_counted("iban", "[IBAN]", report), text)
    text = CARD.sub(_counted("card", "[CARD]", report), text)
    return PHONE.sub(lambda m: _phone(m, report), text)
