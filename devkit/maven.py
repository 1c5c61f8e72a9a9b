"""Jars from Maven Central, fetched once into a cache shared by tests and benchmarks.

Why one place: the Kafka broker, its CLI tools and the Java client all come the same way (a
pom's runtime dependencies copied by `mvn`), and concurrent fetches must not corrupt the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class KafkaUnavailable(RuntimeError):
    """Kafka's jars could not be obtained (no mvn, no network, artifact missing)."""


def cache_root() -> Path:
    """Where fetched jars live: $STRATA_CACHE_DIR, else ~/.cache/strata (shared with tests)."""
    env = os.environ.get("STRATA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "strata"


def maven_libs(pom: Path, home: Path, marker: str, what: str) -> Path:
    """Copy a pom's runtime dependencies once into home/libs and return that dir.

    Skips mvn when the jars for this exact pom are already there (a digest of the pom is kept
    beside them); fetches into a temp dir and renames it, under a file lock, so an interrupted or
    concurrent fetch never leaves half a dir. `marker` is a glob that must match a fetched jar.
    Raises KafkaUnavailable when mvn is missing or fails.
    """
    libs = home / "libs"
    stamp = home / "pom.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if libs.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaUnavailable(f"cannot fetch the {what} jars: `mvn` is not on PATH")
        tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired as e:
                raise KafkaUnavailable(f"mvn timed out fetching the {what} jars") from e
            if proc.returncode != 0 or not list(tmp.glob(marker)):
                out = (proc.stdout + proc.stderr)[-4000:]
                raise KafkaUnavailable(
                    f"mvn could not fetch the {what} jars (rc={proc.returncode}):\n{out}"
                )
            if libs.exists():
                shutil.rmtree(libs)
            tmp.chmod(0o755)  # mkdtemp makes it owner-only
            tmp.rename(libs)
            stamp.write_text(digest + "\n")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs
