"""The cold store: where archives live. A directory by default, or any S3-compatible store.

Keys are ``/``-separated paths below the store's root (a directory, or ``bucket/prefix``).
Every write replaces the whole object at once (a directory store writes a synced
temporary file and renames it; an S3 PUT is atomic), so a crash never leaves a torn
object, only a missing one, and writing the same object again is harmless. Nothing here
decides what may be deleted: :mod:`indexer.lifecycle.runner` does, after verifying.

S3 goes through ``boto3`` (path-style addressing, checksums only when the operation
requires them, so that S3-compatible servers without the newer flexible checksums, like
s3proxy, work too). For write-once storage, create the bucket with S3 Object Lock and a
default retention (see docs/lifecycle.md): the lifecycle only ever deletes past
``retain_days``, which the lock must not outlast.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from indexer.lifecycle.config import ColdStoreConfig
from indexer.state_files import fsync_dir

__all__ = [
    "ColdStore",
    "ColdStoreError",
    "DirectoryStore",
    "S3Store",
    "open_cold_store",
    "s3_client",
]

ENV_SECRET = "OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY"


class ColdStoreError(Exception):
    """The cold store refused or could not be reached; the message names the key."""


class ColdStore(Protocol):
    """Whole-object storage under one root."""

    url: str
    """Where the store is, for messages (never with credentials)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key`` (replacing it)."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file ``path`` as ``key`` (replacing it)."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def download(self, key: str, path: Path) -> bool:
        """Copy the object into the file ``path``; False when there is no such object."""
        ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (recursively), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing one is not an error."""
        ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ColdStoreError(f"{key!r} is not a store key")
    return key


class DirectoryStore:
    """A directory as the cold store (the default; point it at a mounted WORM volume)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(path, tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def download(self, key: str, path: Path) -> bool:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # temporaries of an interrupted write
                out.append(str(Path(dirpath, name).relative_to(self.root)))
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def s3_client(
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    aws_access_key_id: str = "",
    aws_secret_access_key: str = "",
) -> Any:
    """A boto3 S3 client that also works against S3-compatible servers."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"region_name": region or "us-east-1"}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if aws_access_key_id:
        kwargs["aws_access_key_id"] = aws_access_key_id
        kwargs["aws_secret_access_key"] = aws_secret_access_key
    return boto3.client(
        "s3",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
        ),
        **kwargs,
    )


class S3Store:
    """An S3 bucket (and prefix) as the cold store."""

    def __init__(self, bucket: str, prefix: str, client: Any, url: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._s3 = client
        self.url = url

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Any, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ColdStoreError(f"{self.url}: {what} {key}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise ColdStoreError(f"{self.url}: {what} {key}: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (``cold_store.create_bucket``)."""
        from botocore.exceptions import ClientError

        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call("create bucket", self.bucket, self._s3.create_bucket, Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "put", key, self._s3.put_object, Bucket=self.bucket, Key=self._key(key), Body=data
        )

    def put_file(self, key: str, path: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        self._call(
            "upload",
            key,
            self._s3.upload_file,
            Filename=str(path),
            Bucket=self.bucket,
            Key=self._key(key),
            Config=TransferConfig(multipart_threshold=64 * 1024 * 1024),
        )

    def get_bytes(self, key: str) -> bytes | None:
        resp = self._call("get", key, self._s3.get_object, Bucket=self.bucket, Key=self._key(key))
        return None if resp is None else bytes(resp["Body"].read())

    def download(self, key: str, path: Path) -> bool:
        resp = self._call("get", key, self._s3.get_object, Bucket=self.bucket, Key=self._key(key))
        if resp is None:
            return False
        with path.open("wb") as fh:
            for chunk in resp["Body"].iter_chunks(1 << 20):
                fh.write(chunk)
        return True

    def size(self, key: str) -> int | None:
        resp = self._call("head", key, self._s3.head_object, Bucket=self.bucket, Key=self._key(key))
        return None if resp is None else int(resp["ContentLength"])

    def list(self, prefix: str) -> list[str]:
        full = (
            self._key(prefix.rstrip("/")) + "/"
            if prefix
            else (self.prefix + "/" if self.prefix else "")
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kw["ContinuationToken"] = token
            resp = self._call("list", prefix, self._s3.list_objects_v2, **kw) or {}
            for obj in resp.get("Contents", []):
                key = str(obj["Key"])
                if not key.endswith("/"):  # directory markers of file-backed servers
                    out.append(key[strip:])
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
        return sorted(out)

    def delete(self, key: str) -> None:
        self._call("delete", key, self._s3.delete_object, Bucket=self.bucket, Key=self._key(key))


def open_cold_store(config: ColdStoreConfig) -> ColdStore:
    """The store ``config.url`` names."""
    url = config.url
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        client = s3_client(
            endpoint_url=config.endpoint_url,
            region=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key or os.environ.get(ENV_SECRET, ""),
        )
        shown = url + (f" at {config.endpoint_url}" if config.endpoint_url else "")
        store = S3Store(bucket, prefix, client, shown)
        if config.create_bucket:
            store.ensure_bucket()
        return store
    return DirectoryStore(url.removeprefix("file://"))
