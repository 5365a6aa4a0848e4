"""The directory walk behind `POST /v1/batches {"directory": ...}`, on a real filesystem: which files
it takes, what it refuses, and that it stays bounded and inside its root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediaflow.common.errors import MediaflowError
from mediaflow.common.storage import allowed_directory_files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "talks" / "day2").mkdir(parents=True)
    for name in ("talks/a.mp4", "talks/b.MP4", "talks/c.wav", "talks/day2/d.mp4"):
        (root / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"x")
    os.symlink(outside, root / "talks" / "escape")  # a folder link out of the root
    os.symlink(outside / "secret.mp4", root / "talks" / "link.mp4")  # a file link out of the root
    os.symlink(root / "talks", root / "talks" / "day2" / "loop")  # a loop
    return root


def names(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def test_a_pattern_takes_this_folder_or_every_folder_below(tree: Path) -> None:
    assert names(allowed_directory_files(str(tree / "talks"), "*.mp4", [tree], 10), tree) == ["talks/a.mp4"]
    deep = allowed_directory_files(str(tree), "**/*.mp4", [tree], 10)
    assert names(deep, tree) == ["talks/a.mp4", "talks/day2/d.mp4"]  # no link followed out, no loop
    assert allowed_directory_files(str(tree / "talks"), "**.mp4", [tree], 10) == [tree / "talks" / "a.mp4"]


@pytest.mark.parametrize("pattern", ["*/x.mp4", "../*", ".", "", "**/", "a/**/*.mp4"])
def test_patterns_that_are_not_file_name_patterns_are_refused(tree: Path, pattern: str) -> None:
    with pytest.raises(MediaflowError) as err:
        allowed_directory_files(str(tree), pattern, [tree], 10)
    assert err.value.code == "invalid_glob" and err.value.status == 422


def test_directories_outside_the_roots_or_unreadable_are_refused(tree: Path, tmp_path: Path) -> None:
    def code(raw: str, roots: list[Path]) -> tuple[str, int]:
        with pytest.raises(MediaflowError) as err:
            allowed_directory_files(raw, "*", roots, 10)
        return err.value.code, err.value.status

    assert code(str(tmp_path / "outside"), [tree]) == ("path_not_allowed", 403)
    assert code(str(tree / "talks" / "escape"), [tree]) == ("path_not_allowed", 403)  # resolves outside
    assert code(str(tree / "talks"), []) == ("path_not_allowed", 403)
    assert code("talks", [tree]) == ("path_not_allowed", 403)
    assert code(str(tree / "nothing"), [tree]) == ("path_not_found", 404)
    assert code(str(tree / ("x" * 300)), [tree]) == ("invalid_path", 422)


def test_more_matches_than_a_batch_holds_is_413_not_a_cut(tree: Path) -> None:
    with pytest.raises(MediaflowError) as err:
        allowed_directory_files(str(tree), "**/*", [tree], 2)
    assert (err.value.code, err.value.status) == ("batch_too_large", 413)
