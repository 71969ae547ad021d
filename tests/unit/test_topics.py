"""The topic catalog agrees with the proto tree: names, message types and the Topic: comments."""

from __future__ import annotations

import re
from pathlib import Path

from llmops.common.v1.event_meta_pb2 import EventMeta

from shared.topics import BY_NAME, CATALOG, markdown_table

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
TOPIC_COMMENT = re.compile(r"// Topic: ([a-z0-9.\-]+|the request's reply topic[^\n]*)[^\n]*\nmessage (\w+)")


def test_names_are_unique_and_versioned() -> None:
    assert len(BY_NAME) == len(CATALOG)
    for topic in CATALOG:
        assert re.fullmatch(r"llmops\.[a-z\-]+(\.[a-z\-]+)*\.v\d+", topic.name), topic.name
        assert topic.partitions >= 1 and topic.retention_ms > 0
        assert topic.producers and topic.consumers


def test_every_event_topic_carries_a_message_with_event_meta_first() -> None:
    for topic in CATALOG:
        if topic.message is None:
            continue
        first = topic.message.DESCRIPTOR.fields_by_number[1]
        assert first.name == "meta", topic.name
        assert first.message_type.full_name == EventMeta.DESCRIPTOR.full_name


def test_proto_topic_comments_match_the_catalog() -> None:
    documented: dict[str, str] = {}
    for proto in PROTO_ROOT.rglob("events.proto"):
        for topic_name, message in TOPIC_COMMENT.findall(proto.read_text()):
            if topic_name.startswith("llmops."):
                documented[topic_name] = message
    for name, message in documented.items():
        assert name in BY_NAME, f"{name} is documented in proto but missing from the catalog"
        catalog_message = BY_NAME[name].message
        assert catalog_message is not None and catalog_message.DESCRIPTOR.name == message, name
    event_topics = {t.name for t in CATALOG if t.message is not None}
    # Reply topics are named per request; the defaults are in the catalog without a fixed comment.
    assert event_topics - set(documented) <= {
        "llmops.query.generation-chunks.v1",
        "llmops.query.answered.v1",
        "llmops.query.failed.v1",
    }


def test_markdown_table_lists_every_topic() -> None:
    table = markdown_table()
    for topic in CATALOG:
        assert f"`{topic.name}`" in table
