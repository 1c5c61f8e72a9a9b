"""Tansu (Apache-2.0, Rust), a Kafka-compatible broker whose storage is pluggable
(memory, S3, SQLite, Postgres): the shared-storage peer beside Apache Kafka in the
benchmarks. Built once with `cargo install` into ~/.cache/strata/bin.

Why `--features dynostore`: its default features lack the memory:// and s3:// engines
(`FeatureNotEnabled { feature: "dynostore" }`). `python -m devkit.tansu` builds it
ahead of time (~13 min on 2 cores).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devkit.maven import cache_root

TANSU_VERSION = "0.6.0"
FEATURES = "dynostore"


class TansuUnavailable(RuntimeError):
    """tansu could not be built (no cargo, no crates registry)."""


def _cargo() -> str | None:
    if found := shutil.which("cargo"):
        return found
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"), "bin", "cargo")
    return str(home) if os.access(home, os.X_OK) else None


def tansu_binary() -> Path:
    """The pinned tansu, `cargo install`ed into a temp root renamed into place at the end,
    under a file lock, so concurrent callers build once."""
    bindir = cache_root() / "bin"
    binary = bindir / f"tansu-{TANSU_VERSION}"
    if binary.is_file():
        return binary
    bindir.mkdir(parents=True, exist_ok=True)
    with open(bindir / ".tansu.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        cargo = _cargo()
        if cargo is None:
            raise TansuUnavailable("cannot build tansu: no `cargo` on PATH or in ~/.cargo/bin")
        root = Path(tempfile.mkdtemp(prefix="tansubuild-", dir=bindir))
        try:
            cmd = [cargo, "install", "--locked", "tansu", "--version", TANSU_VERSION]
            cmd += ["--features", FEATURES, "--root", str(root)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            except subprocess.TimeoutExpired as e:
                raise TansuUnavailable("cargo install of tansu timed out") from e
            built = root / "bin" / "tansu"
            if proc.returncode != 0 or not built.is_file():
                out = (proc.stdout + proc.stderr)[-4000:]
                raise TansuUnavailable(f"cargo install tansu failed (rc={proc.returncode}):\n{out}")
            built.rename(binary)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return binary


if __name__ == "__main__":
    try:
        print(tansu_binary())
    except TansuUnavailable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
