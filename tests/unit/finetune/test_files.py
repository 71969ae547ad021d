"""Crash-safe folders: complete or absent, and a name another writer took is never silently kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.finetune.files import replace_file, staged_dir


def test_a_staged_folder_appears_complete_and_readable(tmp_path: Path) -> None:
    final = tmp_path / "v1"
    with staged_dir(final, label="v1") as staging:
        (staging / "a.txt").write_text("a")
        assert not final.exists()  # nothing visible until the block ends
    assert (final / "a.txt").read_text() == "a"
    assert stat.S_IMODE((final / "a.txt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no staging folder left


def test_an_error_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "v1", label="v1") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_name_is_kept_only_when_content_is_the_same_by_construction(tmp_path: Path) -> None:
    final = tmp_path / "v1"
    final.mkdir()
    (final / "other.txt").write_text("another writer's")
    with staged_dir(final, label="v1") as staging:  # exist_ok: a content-addressed dataset
        (staging / "a.txt").write_text("a")
    assert [p.name for p in final.iterdir()] == ["other.txt"]
    with pytest.raises(OSError), staged_dir(final, label="v1", exist_ok=False) as staging:
        (staging / "a.txt").write_text("a")  # a numbered model version: must not be taken silently
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_replace_file_swaps_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "result.json"
    replace_file(path, b"{}")
    replace_file(path, b'{"ok": true}')
    assert path.read_bytes() == b'{"ok": true}' and sorted(p.name for p in path.parent.iterdir()) == [
        "result.json"
    ]
