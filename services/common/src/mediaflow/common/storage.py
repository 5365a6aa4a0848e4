"""Blob storage behind one interface: `file://` (default; a shared volume in Kubernetes) and `s3://`.

Keys: `media/{media_id}/{name}`, `jobs/{job_id}/{artifact}`. Writes go to a temporary key and are
moved into place, so a reader (or a retried job) never sees a half-written object.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlparse

from .errors import InvalidInput, NotFound

MAX_WALK = 100_000  # directory entries a batch's directory walk may look at


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"invalid storage key {key!r}", code="invalid_key")
    return key


def allowed_path(raw: str | Path, roots: list[Path]) -> Path:
    """A server path a job may read: absolute, no `..`, and after resolving every symlink still a
    file inside one of `roots` (a link inside a root that points outside is refused like any other).
    Checked by the gateway at submit and again by the worker that opens it."""
    from .errors import MediaflowError

    def refuse(why: str) -> MediaflowError:
        return MediaflowError(why, code="path_not_allowed", status=403)

    if not roots:
        raise refuse("server paths are disabled (no allowed roots are configured)")
    if "\x00" in str(raw):
        raise refuse("the path contains a NUL byte")
    candidate = Path(raw)
    if not candidate.is_absolute():
        raise refuse("the path must be absolute")
    if ".." in candidate.parts:
        raise refuse("the path must not contain '..'")
    resolved = Path(os.path.realpath(candidate))
    if not any(resolved.is_relative_to(os.path.realpath(root)) for root in roots):
        raise refuse("the path is outside the allowed roots")
    if not resolved.is_file():
        raise NotFound("no file at that path", code="path_not_found")
    return resolved


def allowed_directory_files(raw: str, pattern: str, roots: list[Path], limit: int) -> list[Path]:
    """The files of a directory under one of `roots` whose name matches `pattern`: `*.mp4` (this
    directory) or `**/*.mp4` (and every folder below), sorted. The walk never follows a symlinked
    folder, skips a file that resolves outside the root, and stops at `limit` + 1 matches (413
    batch_too_large: never a silent cut) or after MAX_WALK entries (422 directory_too_large); each
    file is checked again with allowed_path by whoever opens it."""
    from .errors import MediaflowError

    def refuse(why: str) -> MediaflowError:
        return MediaflowError(why, code="path_not_allowed", status=403)

    recursive = pattern.startswith("**/")
    name_pattern = pattern.removeprefix("**/")
    if not name_pattern or "/" in name_pattern or "\x00" in name_pattern or name_pattern in (".", ".."):
        raise InvalidInput(
            'glob is a file-name pattern, e.g. "*.mp4", or "**/*.mp4" for every folder below', code="invalid_glob"
        )
    if not roots:
        raise refuse("server paths are disabled (no allowed roots are configured)")
    directory = Path(raw)
    if "\x00" in raw or not directory.is_absolute() or ".." in directory.parts:
        raise refuse("the directory must be an absolute path without '..'")
    try:
        resolved = Path(os.path.realpath(directory))
        root = next((Path(os.path.realpath(r)) for r in roots if resolved.is_relative_to(os.path.realpath(r))), None)
        if root is None:
            raise refuse("the directory is outside the allowed roots")
        if not resolved.is_dir():
            raise NotFound("no directory at that path", code="path_not_found")
        found: list[Path] = []
        seen = 0
        for folder, subfolders, files in os.walk(resolved, followlinks=False):
            subfolders.sort()
            if not recursive:
                subfolders.clear()
            seen += 1 + len(files)
            if seen > MAX_WALK:
                raise MediaflowError(
                    f"the directory holds more than {MAX_WALK} entries; name a smaller one",
                    code="directory_too_large",
                    status=422,
                )
            for name in files:
                if not fnmatch.fnmatchcase(name, name_pattern):
                    continue
                path = Path(folder) / name
                if not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(root):
                    continue  # a link to something that is no file, or to outside the root
                found.append(path)
                if len(found) > limit:
                    raise MediaflowError(
                        f"the directory holds more than {limit} matching files (a batch holds at most {limit})",
                        code="batch_too_large",
                        status=413,
                        detail={"limit": limit},
                    )
    except OSError as exc:  # e.g. ENAMETOOLONG, EACCES
        raise MediaflowError(
            f"the directory cannot be read: {exc.strerror or type(exc).__name__}", code="invalid_path", status=422
        ) from None
    return sorted(found)


class Storage(Protocol):
    url: str

    def writer(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def put_file(self, key: str, src: Path) -> int: ...
    def local_path(self, key: str) -> contextlib.AbstractContextManager[Path]: ...
    def open(self, key: str) -> IO[bytes]: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def ping(self) -> None: ...
    def names(self, prefix: str) -> list[str]:
        """The names directly under `prefix/` (folders and files), e.g. the job ids under `jobs`."""
        ...


class FileStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[IO[bytes]]:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.part-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, src: Path) -> int:
        with self.writer(key) as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out, 1024 * 1024)
        return self.size(key)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"object {key} does not exist", code="object_not_found")
        yield path

    def open(self, key: str) -> IO[bytes]:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"object {key} does not exist", code="object_not_found") from None

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"object {key} does not exist", code="object_not_found") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.root / check_key(prefix.rstrip("/")), ignore_errors=True)

    def move(self, src: str, dst: str) -> None:
        """Within the root: a rename, so readers see the old object or the new one, never half."""
        target = self.path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.path(src), target)
        except FileNotFoundError:
            raise NotFound(f"object {src} does not exist", code="object_not_found") from None

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"{self.root} is not writable")

    def names(self, prefix: str) -> list[str]:
        try:
            return [p.name for p in (self.root / check_key(prefix.rstrip("/"))).iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return []


class S3Storage:
    """S3 or any S3-compatible store (MinIO, Ceph). Endpoint and credentials come from the standard
    AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import boto3  # imported here: only S3 deployments pay for it

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client("s3")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[IO[bytes]]:
        with tempfile.NamedTemporaryFile(prefix="mediaflow-") as fh:
            yield fh
            fh.flush()
            self.put_file(key, Path(fh.name))

    def put_file(self, key: str, src: Path) -> int:
        final = self._key(key)
        tmp = f"{final}.part-{uuid.uuid4().hex}"
        self.client.upload_file(str(src), self.bucket, tmp)
        try:
            self.client.copy({"Bucket": self.bucket, "Key": tmp}, self.bucket, final)
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=tmp)
        return src.stat().st_size

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        suffix = Path(key).suffix
        with tempfile.NamedTemporaryFile(prefix="mediaflow-", suffix=suffix) as fh:
            try:
                self.client.download_fileobj(self.bucket, self._key(key), fh)
            except self.client.exceptions.ClientError as exc:
                raise NotFound(f"object {key} does not exist", code="object_not_found") from exc
            fh.flush()
            yield Path(fh.name)

    def open(self, key: str) -> IO[bytes]:
        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return body
        except self.client.exceptions.NoSuchKey:
            raise NotFound(f"object {key} does not exist", code="object_not_found") from None

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except self.client.exceptions.ClientError:
            raise NotFound(f"object {key} does not exist", code="object_not_found") from None

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def move(self, src: str, dst: str) -> None:
        try:
            self.client.copy({"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst))
        except self.client.exceptions.ClientError as exc:
            raise NotFound(f"object {src} does not exist", code="object_not_found") from exc
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src))

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def names(self, prefix: str) -> list[str]:
        base = self._key(prefix.rstrip("/")) + "/"
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            found += [p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
            found += [o["Key"][len(base) :] for o in page.get("Contents", [])]
        return found


def open_storage(url: str) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # file://./relative and file:///absolute both work
        return FileStorage(Path((parsed.netloc + parsed.path) or "."))
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path)
    raise ValueError(f"unsupported storage URL {url!r} (use file:// or s3://)")
