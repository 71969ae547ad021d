"""PII scrubbing: every kind is replaced; ordinary numbers (versions, ports, dates, counts) are kept."""

from __future__ import annotations

import pytest

from services.finetune.pii import ScrubReport, scrub


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to john.doe+ops@mail.example.co.uk today", "write to [EMAIL] today", "email"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [IBAN] please", "iban"),
        ("IBAN GB29NWBK60161331926819.", "IBAN [IBAN].", "iban"),
        ("card 4111 1111 1111 1111 expires", "card [CARD] expires", "card"),
        ("card 4111-1111-1111-1111", "card [CARD]", "card"),
        ("card 378282246310005", "card [CARD]", "card"),
        ("call +49 30 1234567 now", "call [PHONE] now", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("call 555.123.4567", "call [PHONE]", "phone"),
        ("call +14155552671", "call [PHONE]", "phone"),
    ],
)
def test_each_kind_is_replaced_and_counted(text: str, expected: str, kind: str) -> None:
    report = ScrubReport()
    assert scrub(text, report) == expected
    assert report.counts[kind] == 1 and report.total() == 1


@pytest.mark.parametrize(
    "text",
    [
        "Kafka 4.1.1 listens on 127.0.0.1:19092",
        "since 2024-05-01, Python 3.11.7, port 50051",
        "chunks of 200 tokens with 32 overlap, 384 dimensions, top 5 of 10 at alpha 0.5",
        "12 partitions, retention 90 days, 1000 rows",
        "[EMAIL] and [PHONE] stay placeholders",
    ],
)
def test_ordinary_text_and_numbers_are_kept(text: str) -> None:
    report = ScrubReport()
    assert scrub(text, report) == text
    assert report.total() == 0


def test_several_kinds_in_one_text() -> None:
    text = "Mail a@b.io, call +1 415 555 2671, pay DE89370400440532013000 with 5500 0000 0000 0004."
    assert scrub(text) == "Mail [EMAIL], call [PHONE], pay [IBAN] with [CARD]."


def test_scrubbing_is_idempotent() -> None:
    once = scrub("x@y.com 4111111111111111 +49 30 1234567")
    assert scrub(once) == once
