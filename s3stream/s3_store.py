"""An ObjectStore over S3 (or anything speaking its API: MinIO, moto, R2...) via aiobotocore.

Every failure is translated into the three errors of s3stream.store, so callers never
import botocore: missing keys become ObjectNotFound, lost conditional writes become
PreconditionFailed, and anything that may heal by itself (network, timeouts, 5xx,
throttling, credentials) becomes StoreUnavailable with the original as __cause__.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import add_expect_header

from s3stream.store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    PreconditionFailed,
    StoreUnavailable,
)

DELETE_BATCH = 1000
THREAD_DIGEST_BYTES = 64 * 1024  # bodies at least this big are hashed on a thread
"""DeleteObjects takes at most this many keys per request."""

RETRY_ATTEMPTS = 3
MIN_UPLOAD_RATE = 1024 * 1024
"""Bytes/s: an upload slower than this counts as hung (see S3Store._upload_deadline)."""
RETRY_BACKOFF_ALLOWANCE = 15.0
"""Seconds botocore's standard mode may sleep between attempts (jitter, Retry-After)."""

_TRANSIENT = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)
"""Transport-level failures. BotoCoreError covers EndpointConnectionError,
ConnectTimeoutError, ReadTimeoutError, ResponseStreamingError and NoCredentialsError."""

_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout"}
)


def _client_error(e: ClientError, what: str) -> ObjectStoreError:
    """The store error for an S3 error response."""
    err = e.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    msg = f"{what}: {code or status} {err.get('Message', '')}".rstrip()
    if code == "NoSuchBucket":
        # The whole store is missing (misconfigured or deleted), not one object; a
        # caller that treated this as "object gone" could drop data.
        return StoreUnavailable(msg)
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return ObjectNotFound(msg)
    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
        return PreconditionFailed(msg)
    # 5xx, throttling, and also 4xx like AccessDenied: none is the caller's logic error,
    # and an operator can fix them without restarting us.
    return StoreUnavailable(msg)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Translate botocore/aiohttp failures inside the block into store errors."""
    try:
        yield
    except ClientError as e:
        raise _client_error(e, what) from e
    except _TRANSIENT as e:
        detail = str(e) or "no answer in time"
        raise StoreUnavailable(f"{what}: {type(e).__name__}: {detail}") from e


class S3Store:
    """Objects in `bucket`, under `prefix` + '/' when a prefix is given.

    The client is created by `open()` (or on first use) inside the running event loop,
    since aiohttp sessions belong to one loop. Credentials come from botocore's default
    chain: environment, shared config files, container/instance metadata.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        path_style: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        max_pool_connections: int = 32,
    ) -> None:
        if not bucket:
            raise ValueError("empty bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._config = AioConfig(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
            # botocore SHA-256-signs the body of every request over plain HTTP (MinIO
            # and moto endpoints, typically): tens of ms per upload on the event loop.
            # PUTs send a Content-MD5 computed on a thread instead, which is signed as a
            # header and checked by the store.
            s3={
                "addressing_style": "path" if path_style else "auto",
                "payload_signing_enabled": False,
            },
            # a whole-body CRC32 per PUT would likewise be computed on the event loop
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._open_lock = asyncio.Lock()
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Create the S3 client; no request is made. Idempotent."""
        async with self._open_lock:
            if self._closed:
                raise RuntimeError(f"{self.describe()} is closed")
            if self._client is not None:
                return
            stack = AsyncExitStack()
            try:
                client = await stack.enter_async_context(
                    AioSession().create_client(
                        "s3", endpoint_url=self.endpoint_url, config=self._config
                    )
                )
            except BaseException as e:
                await stack.aclose()
                if isinstance(e, _TRANSIENT):  # e.g. a malformed shared config file
                    raise StoreUnavailable(f"open {self.describe()}: {e}") from e
                raise
            # botocore sends "Expect: 100-continue" on every PutObject, and aiohttp waits
            # for the 100 with no timeout at all: one hung server would hang put() forever.
            client.meta.events.unregister("before-call.s3", add_expect_header)
            self._stack, self._client = stack, client

    async def close(self) -> None:
        """Close the client and its connection pool. Idempotent."""
        async with self._open_lock:
            self._closed = True
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (embedded and test setups)."""
        client = await self._get_client()
        with _errors(f"ensure bucket {self.bucket}"):
            try:
                await client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                if code not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await client.create_bucket(**kwargs)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    async def _get_client(self) -> Any:
        if self._client is None:
            await self.open()
        return self._client

    def _upload_deadline(self, nbytes: int) -> float:
        """A bound on a whole request with a body, retries included.

        aiohttp's read timeout only runs while it waits for a response; while it writes a
        body that a hung server does not read, nothing times out, so a body bigger than
        the socket buffers would wait forever. Every attempt may use its connect and read
        timeouts plus the transfer at MIN_UPLOAD_RATE.
        """
        per_attempt = self._connect_timeout + self._read_timeout + nbytes / MIN_UPLOAD_RATE
        return RETRY_ATTEMPTS * per_attempt + RETRY_BACKOFF_ALLOWANCE

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- the ObjectStore interface ----------------------------------------------------

    async def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """PutObject, conditional when asked; returns the ETag S3 assigned."""
        if if_none_match and if_match is not None:
            raise ValueError("if_none_match and if_match are mutually exclusive")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if len(data) >= THREAD_DIGEST_BYTES:
            kwargs["ContentMD5"] = await asyncio.to_thread(_content_md5, data)
        else:
            kwargs["ContentMD5"] = _content_md5(data)
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        client = await self._get_client()
        try:
            with _errors(f"put {key!r}"):
                async with asyncio.timeout(self._upload_deadline(len(data))):
                    resp = await client.put_object(**kwargs)
        except ObjectNotFound as e:
            # S3 answers If-Match on a missing key with 404; to callers it is a lost CAS.
            raise PreconditionFailed(f"put {key!r}: does not exist (If-Match)") from e
        return str(resp["ETag"])

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end), clipped to the object's size like a slice."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        if end is not None and start == end:
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        client = await self._get_client()
        with _errors(f"get {key!r}"):
            try:
                resp = await client.get_object(**kwargs)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # start at or past the end (or an empty object): empty slice
                raise
            async with resp["Body"] as body:
                return await body.read()

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The whole object and the ETag from the same response, so they agree."""
        client = await self._get_client()
        with _errors(f"get {key!r}"):
            resp = await client.get_object(Bucket=self.bucket, Key=self._key(key))
            async with resp["Body"] as body:
                data = await body.read()
        return data, str(resp["ETag"])

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """ListObjectsV2 over every page; keys come back without the store's prefix."""
        client = await self._get_client()
        strip = len(self._key(""))
        out: list[ObjectInfo] = []
        with _errors(f"list {prefix!r}"):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", ()):
                    out.append(ObjectInfo(obj["Key"][strip:], int(obj["Size"])))
        out.sort(key=lambda info: info.key)
        return out

    async def delete(self, keys: list[str]) -> None:
        """DeleteObjects in batches of 1000; S3 reports missing keys as deleted."""
        client = await self._get_client()
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            objects = [{"Key": self._key(k)} for k in batch]
            body_size = sum(len(o["Key"]) + 32 for o in objects)  # roughly, as XML
            with _errors(f"delete {len(batch)} keys"):
                async with asyncio.timeout(self._upload_deadline(body_size)):
                    resp = await client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreUnavailable(
                    f"delete: {len(errors)} of {len(batch)} keys failed, e.g. "
                    f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message', '')}"
                )

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS {self.region}"
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"s3://{path} (endpoint {where})"


def _content_md5(data: bytes) -> str:
    """The Content-MD5 header's value (base64 of the MD5 digest)."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
