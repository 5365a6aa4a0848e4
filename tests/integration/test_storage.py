"""Both storage backends behave alike: file:// on disk, s3:// over real HTTP against moto's S3
server (an S3 emulator: no real S3 or MinIO is reachable from this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediaflow.common.errors import InvalidInput, NotFound
from mediaflow.common.storage import FileStorage, S3Storage, Storage, open_storage


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return open_storage(f"file://{tmp_path / 'blobs'}")
    return open_storage(request.getfixturevalue("s3_storage_url"))


def test_round_trip(storage: Storage, media: Path) -> None:
    size = storage.put_file("media/m_1/jfk.flac", media / "jfk.flac")
    assert size == (media / "jfk.flac").stat().st_size == storage.size("media/m_1/jfk.flac")
    assert storage.exists("media/m_1/jfk.flac")
    with storage.local_path("media/m_1/jfk.flac") as path:
        assert path.read_bytes() == (media / "jfk.flac").read_bytes()
    with storage.open("media/m_1/jfk.flac") as fh:
        assert fh.read(4) == b"fLaC"
    with storage.writer("jobs/j_1/captions.srt") as out:
        out.write(b"1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    assert storage.size("jobs/j_1/captions.srt") == 35
    storage.ping()


def test_failed_write_leaves_nothing(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.writer("jobs/j_2/output.mp4") as out:
        out.write(b"half a file")
        raise RuntimeError("encoder died")
    assert not storage.exists("jobs/j_2/output.mp4")
    if isinstance(storage, FileStorage):
        assert not any(storage.root.rglob("*.part-*"))


def test_delete_prefix_removes_a_jobs_artifacts_only(storage: Storage) -> None:
    for key in ("jobs/j_3/a.txt", "jobs/j_3/b.txt", "jobs/j_33/c.txt"):
        with storage.writer(key) as out:
            out.write(b"x")
    storage.delete_prefix("jobs/j_3")
    assert not storage.exists("jobs/j_3/a.txt") and not storage.exists("jobs/j_3/b.txt")
    assert storage.exists("jobs/j_33/c.txt")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "media//x", "media/./x", ""])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidInput):
        storage.size(key)


def test_missing_object(storage: Storage) -> None:
    with pytest.raises(NotFound):
        storage.size("media/m_none/x.wav")
    with pytest.raises(NotFound), storage.local_path("media/m_none/x.wav"):
        pass
    assert not storage.exists("media/m_none/x.wav")


def test_s3_url_is_parsed(s3_endpoint: str) -> None:
    store = open_storage("s3://bucket-a/some/prefix")
    assert isinstance(store, S3Storage) and store.bucket == "bucket-a" and store.prefix == "some/prefix"
