"""An ObjectStore over a local directory: the embedded default, and the tests' reference.

Every write is crash-safe: the bytes go to a temp file that is fsynced before it is
linked or renamed into place, and the directory is fsynced after, so after a crash a key
holds either its old or its new content, never a torn mix. All file I/O runs on worker
threads so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import crc32c

from s3stream.store import ObjectInfo, ObjectNotFound, PreconditionFailed, StoreUnavailable

TEMP_PREFIX = ".tmp-"
"""Names of in-flight writes; never valid key components, skipped by list()."""


def etag_of(data: bytes) -> str:
    """The ETag of `data`: hex crc32c, quoted the way S3 quotes its ETags."""
    return f'"{crc32c.crc32c(data):08x}"'


def _check_parts(text: str, what: str) -> list[str]:
    """The '/'-separated components of a key or prefix, refusing anything that could
    escape the root or collide with temp files."""
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} must not start with '/'")
    if "\0" in text or "\\" in text:
        raise ValueError(f"{what} {text!r} contains a NUL or backslash")
    parts = text.split("/")
    for part in parts:
        if part in (".", ".."):
            raise ValueError(f"{what} {text!r} contains a '.' or '..' component")
        if part.startswith(TEMP_PREFIX):
            raise ValueError(f"{what} {text!r} uses the reserved prefix {TEMP_PREFIX!r}")
    return parts


SYNC_CHUNK_BYTES = 4 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _io_errors(what: str) -> Iterator[None]:
    """Disk errors (full, read-only, EIO) become StoreUnavailable, like a failing S3."""
    try:
        yield
    except OSError as e:
        raise StoreUnavailable(f"{what}: {e}") from e


class LocalDirectoryStore:
    """Objects are files under `root`; key 'a/b/c' is the file root/a/b/c.

    Conditional writes: `if_none_match` uses link(2), which is atomic across processes.
    `if_match` is a compare-and-set under a threading.Lock, so it is only atomic among
    writers in this process sharing this store object; two processes (or two store
    objects) doing if_match on one directory can both win. ETags are crc32c, so two
    different contents can in principle share one (1 in 2**32).

    Unlike S3, a key cannot be both an object and a "directory" of other keys
    ('a' and 'a/b' together); that raises ValueError.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self._cas_lock = threading.Lock()

    # -- helpers (run on worker threads) -------------------------------------------------

    def _path(self, key: str) -> Path:
        if not key:
            raise ValueError("empty key")
        parts = _check_parts(key, "key")
        if "" in parts:
            raise ValueError(f"key {key!r} has an empty component")
        return self.root.joinpath(*parts)

    def _make_dirs(self, directory: Path, key: str) -> None:
        """Create `directory` and any missing parents, fsyncing each new entry's parent
        so the new directories survive a crash along with the file put into them."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            if d == d.parent:
                break
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise ValueError(f"key {key!r} runs through an existing object {d}") from None
                continue  # a concurrent put made it
            except NotADirectoryError:
                raise ValueError(f"key {key!r} runs through an existing object") from None
            _fsync_dir(d.parent)

    def _write_temp(self, directory: Path, data: bytes) -> Path:
        tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            flushed = 0
            while view:
                n = os.write(fd, view[:SYNC_CHUNK_BYTES])
                view = view[n:]
                flushed += n
                if flushed >= SYNC_CHUNK_BYTES:
                    # flush as we go: one fsync of a whole object would queue the WAL's
                    # fdatasyncs (every produce's ack) behind tens of MB on the same disk
                    os.fdatasync(fd)
                    flushed = 0
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _current_etag(self, path: Path) -> str | None:
        try:
            return etag_of(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _put(self, key: str, data: bytes, if_none_match: bool, if_match: str | None) -> str:
        path = self._path(key)
        with _io_errors(f"put {key!r}"):
            self._make_dirs(path.parent, key)
            tmp = self._write_temp(path.parent, data)
            try:
                if if_none_match:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise PreconditionFailed(f"{key!r} already exists") from None
                else:
                    with self._cas_lock:
                        if if_match is not None:
                            current = self._current_etag(path)
                            if current != if_match:
                                raise PreconditionFailed(
                                    f"{key!r} has ETag {current}, not {if_match}"
                                )
                        try:
                            os.replace(tmp, path)
                        except IsADirectoryError:
                            raise ValueError(f"key {key!r} is a prefix of other keys") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(path.parent)
        return etag_of(data)

    def _read(self, key: str, start: int, end: int | None) -> bytes:
        path = self._path(key)
        with _io_errors(f"get {key!r}"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise ObjectNotFound(key) from None
            try:
                size = os.fstat(fd).st_size
                stop = size if end is None else min(end, size)
                chunks: list[bytes] = []
                pos = start
                while pos < stop:
                    chunk = os.pread(fd, stop - pos, pos)
                    if not chunk:
                        break  # truncated underneath us; cannot happen with replace-only writes
                    chunks.append(chunk)
                    pos += len(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        parts = _check_parts(prefix, "prefix") if prefix else [""]
        # Walk only the deepest directory the prefix fully names; the last component is
        # a string prefix of names in it (S3 prefixes are not directory boundaries).
        top = self.root.joinpath(*parts[:-1])
        out: list[ObjectInfo] = []
        with _io_errors(f"list {prefix!r}"):
            stack = [top]
            while stack:
                d = stack.pop()
                try:
                    entries = list(os.scandir(d))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX):
                        continue
                    key = Path(entry.path).relative_to(self.root).as_posix()
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if key.startswith(prefix) or prefix.startswith(key + "/"):
                                stack.append(Path(entry.path))
                        elif key.startswith(prefix):
                            out.append(ObjectInfo(key, entry.stat().st_size))
                    except FileNotFoundError:
                        continue  # deleted while we walked
        out.sort(key=lambda info: info.key)
        return out

    def _delete(self, keys: list[str]) -> None:
        paths = [self._path(k) for k in keys]  # validate all before deleting any
        dirs: set[Path] = set()
        with _io_errors("delete"):
            for path in paths:
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except IsADirectoryError:
                    continue  # a prefix of other keys, not an object: nothing to delete
                dirs.add(path.parent)
            for d in dirs:
                _fsync_dir(d)

    # -- the ObjectStore interface ----------------------------------------------------

    async def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store `data` under `key` and return its ETag (see the class docstring)."""
        if if_none_match and if_match is not None:
            raise ValueError("if_none_match and if_match are mutually exclusive")
        return await asyncio.to_thread(self._put, key, bytes(data), if_none_match, if_match)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object, clipped to its size."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        return await asyncio.to_thread(self._read, key, start, end)

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object and the ETag of exactly those bytes (one open file, so consistent)."""
        data = await asyncio.to_thread(self._read, key, 0, None)
        return data, etag_of(data)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every key starting with `prefix` (a string prefix, as in S3), sorted."""
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, keys: list[str]) -> None:
        """Unlink the keys; missing ones are skipped. Empty directories are left behind."""
        if keys:
            await asyncio.to_thread(self._delete, list(keys))

    async def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def describe(self) -> str:
        return self.root.as_uri()
