"""Turn the configured storage URL into an ObjectStore, and get it ready to use."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from s3stream.local_store import LocalDirectoryStore
from s3stream.s3_store import S3Store
from s3stream.store import ObjectStore

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{2,62}")
"""S3's bucket naming rules, loosened to the underscores some S3-compatible stores allow."""

_USAGE = "expected file:///absolute/path, a plain directory path, or s3://bucket[/prefix]"


def store_from_url(
    url: str, *, endpoint: str | None = None, region: str = "us-east-1", path_style: bool = False
) -> ObjectStore:
    """The store `url` names. `endpoint`, `region` and `path_style` only apply to s3://.

    Nothing is opened or created here; see open_store().
    """
    if not url or not url.strip():
        raise ValueError(f"empty object store URL; {_USAGE}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "" and "://" not in url:
        return LocalDirectoryStore(Path(url).expanduser().absolute())
    if parts.query or parts.fragment:
        raise ValueError(f"object store URL {url!r} must not have a query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL {url!r} names host {parts.netloc!r}; {_USAGE}")
        path = unquote(parts.path)
        if not path.startswith("/") or path.strip("/") == "":
            raise ValueError(f"file URL {url!r} needs an absolute directory path; {_USAGE}")
        return LocalDirectoryStore(Path(path))
    if scheme == "s3":
        bucket = parts.netloc
        if "@" in bucket or ":" in bucket:
            raise ValueError(
                f"s3 URL {url!r}: credentials belong in the environment and the endpoint "
                "in its own setting, not in the URL"
            )
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(
                f"s3 URL {url!r}: {bucket!r} is not a valid bucket name "
                "(3-63 lowercase letters, digits, '.', '-')"
            )
        prefix = unquote(parts.path).strip("/")
        return S3Store(bucket, prefix, endpoint_url=endpoint, region=region, path_style=path_style)
    raise ValueError(f"unsupported object store URL {url!r}; {_USAGE}")


async def open_store(store: ObjectStore) -> ObjectStore:
    """Prepare `store` for use: for S3 create the client and the bucket if missing.

    Returns the same store, for `store = await open_store(store_from_url(...))`.
    """
    open_ = getattr(store, "open", None)
    if open_ is not None:
        await open_()
    ensure_bucket = getattr(store, "ensure_bucket", None)
    if ensure_bucket is not None:
        await ensure_bucket()
    return store
