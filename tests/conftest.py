"""Fixtures that start the real infrastructure once per test session, with the project's own scripts.

A component that cannot start fails the tests that need it, with the reason: nothing is skipped.
Ports start at 29000 so a `make run` stack on 19000 can stay up while tests run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.infra.process import InfraError
from shared.infra.stack import Stack

TEST_PORT_BASE = int(os.environ.get("LLMOPS_TEST_PORT_BASE", "29000"))


@pytest.fixture(scope="session")
def infra_state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="llmops-test-infra-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(stack: Stack, component: str) -> None:
    try:
        getattr(stack, component).start()
    except InfraError as exc:
        pytest.fail(f"{component} could not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def test_stack(infra_state_dir: Path) -> Stack:
    return Stack(infra_state_dir, port_base=TEST_PORT_BASE)


@pytest.fixture(scope="session")
def kafka(test_stack: Stack) -> Iterator[str]:
    """Bootstrap servers of a real single-node Kafka (KRaft) with the catalog's topics."""
    _start(test_stack, "kafka")
    yield test_stack.kafka.bootstrap_servers
    test_stack.kafka.stop()


@pytest.fixture(scope="session")
def weaviate(test_stack: Stack) -> Iterator[str]:
    _start(test_stack, "weaviate")
    yield test_stack.weaviate.url
    test_stack.weaviate.stop()


@pytest.fixture(scope="session")
def triton(test_stack: Stack) -> Iterator[str]:
    _start(test_stack, "triton")
    yield test_stack.triton.grpc_url
    test_stack.triton.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that flood the shared catalog topics run last, in their usual order: a consumer group
    that a later test starts reads those topics from the beginning and would first have to
    dead-letter the whole flood."""
    items.sort(key=lambda item: item.get_closest_marker("floods_topics") is not None)
