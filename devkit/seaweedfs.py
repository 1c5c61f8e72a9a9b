"""SeaweedFS's `weed`, built once from its Go module into ~/.cache/strata/bin, and a
`weed server` on loopback: a real S3 server for the object-store figures and tests.

Why: moto reads a whole object for every ranged GET in one Python process, so in
benchmarks it, not Strata, sets the S3 figures. `go install weed@VERSION` is refused
(its go.mod has a `replace`), so it is built from a small wrapper module that copies
that replace. `python -m devkit.seaweedfs` builds it ahead of time (~7 min on 2 cores).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.helm import _go
from devkit.maven import cache_root
from devkit.moto import TEST_CREDENTIALS, MotoServer
from devkit.procs import free_port

WEED_MODULE = "github.com/seaweedfs/seaweedfs"
WEED_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
# the one replace directive in seaweedfs's go.mod: bump it with the version
REPLACE = "github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0"


class WeedUnavailable(RuntimeError):
    """weed could not be built (no Go toolchain, no module proxy)."""


def weed_binary() -> Path:
    """The pinned weed, built the first time under a file lock into a temp file renamed at
    the end (concurrent callers build once; an interrupted build leaves nothing)."""
    bindir = cache_root() / "bin"
    binary = bindir / f"weed-{WEED_VERSION[-12:]}"
    if binary.is_file():
        return binary
    bindir.mkdir(parents=True, exist_ok=True)
    with open(bindir / ".weed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        go = _go()
        if go is None:
            raise WeedUnavailable("cannot build weed: no `go` on PATH or in /usr/local/go")
        work = Path(tempfile.mkdtemp(prefix="weedbuild-", dir=bindir))
        try:
            (work / "go.mod").write_text(
                f"module local/weedbuild\ngo 1.24\nrequire {WEED_MODULE} {WEED_VERSION}\n"
                f"replace {REPLACE}\n"
            )
            (work / "tools.go").write_text(
                f'//go:build tools\npackage tools\nimport _ "{WEED_MODULE}/weed"\n'
            )
            env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
            for cmd in (["mod", "tidy"], ["build", "-o", "weed", f"{WEED_MODULE}/weed"]):
                try:
                    proc = subprocess.run(
                        [go, *cmd], cwd=work, env=env, capture_output=True, text=True, timeout=2400
                    )
                except subprocess.TimeoutExpired as e:
                    raise WeedUnavailable(f"go {cmd[0]} of weed timed out") from e
                if proc.returncode != 0:
                    out = (proc.stdout + proc.stderr)[-4000:]
                    raise WeedUnavailable(
                        f"go {cmd[0]} of weed failed (rc={proc.returncode}):\n{out}"
                    )
            (work / "weed").chmod(0o755)
            (work / "weed").rename(binary)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return binary


def _port_pair() -> int:
    """A free loopback port whose +10000 (where weed puts that server's gRPC) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise WeedUnavailable("no free loopback port pair for weed")


class WeedServer(MotoServer):
    """`weed server` (master, volume, filer and S3 gateway in one process) on loopback; the
    same interface as MotoServer (endpoint, env, client, create_bucket), so either can back
    a test or a benchmark. Its data lives in `data_dir` (a temp dir unless given); any
    credentials are accepted since no identities are configured."""

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="weed-"))

    def start(self, timeout: float = 60.0) -> WeedServer:
        binary = weed_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _port_pair()
        master, volume, filer = (_port_pair() for _ in range(3))
        self._spawn(
            [
                str(binary),
                "server",
                f"-dir={self.data_dir}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                f"-s3.port={self.port}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
            ],
            env={**os.environ, **TEST_CREDENTIALS},
        )
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log, code = self.log(), self.proc.poll()
                self.stop()
                raise WeedUnavailable(f"weed server did not serve S3 (rc={code}):\n{log}")
            time.sleep(0.3)
        return self

    def create_bucket(self, name: str) -> None:
        """Create `name`, retried while the just-started volume server is not assigned yet."""
        deadline = time.monotonic() + 30
        while True:
            try:
                super().create_bucket(name)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        super().stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        print(weed_binary())
    except WeedUnavailable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
