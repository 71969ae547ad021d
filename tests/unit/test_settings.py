"""Every service has its own env prefix and every settings field says what it is."""

from __future__ import annotations

import importlib

import pytest
from pydantic_settings import BaseSettings

from shared.settings import KafkaSettings, ServiceSettings

SERVICES = ["embedder", "retriever", "generator", "monitor", "finetune", "gateway"]


def settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{name}.settings")
    [cls] = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, ServiceSettings) and v is not ServiceSettings
    ]
    return cls


def test_each_service_has_its_own_prefix_and_ports() -> None:
    classes = [settings_class(n) for n in SERVICES]
    prefixes = {c.model_config["env_prefix"] for c in classes}
    assert prefixes == {f"LLMOPS_{n.upper()}_" for n in SERVICES}
    ports = [c().grpc_port for c in classes]
    assert len(set(ports)) == len(SERVICES)


@pytest.mark.parametrize("cls", [KafkaSettings, *[settings_class(n) for n in SERVICES]])
def test_every_field_is_described(cls: type[BaseSettings]) -> None:
    missing = [name for name, field in cls.model_fields.items() if not field.description]
    assert missing == []


def test_env_overrides_reach_service_and_shared_kafka_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_EMBEDDER_GRPC_PORT", "6001")
    monkeypatch.setenv("LLMOPS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    settings = settings_class("embedder")()
    assert settings.grpc_port == 6001
    assert settings.kafka.bootstrap_servers == "127.0.0.1:1"
    assert settings.group_id == "llmops.embedder"
