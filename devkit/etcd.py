"""A real single-member etcd as a subprocess, for the cluster-mode tests.

A real server rather than a fake because what matters is its behaviour under faults:
lease expiry, watches that break when it dies, leases extended when it comes back.
`kill()` is a crash (SIGKILL), and `restart()` reuses the data directory and ports, so
clients configured with the old URL reconnect to the same store.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from devkit.procs import NO_PROXY, ServerProcess, free_port


def etcd_binary() -> str | None:
    return shutil.which("etcd")


class EtcdServer(ServerProcess):
    """`etcd` on free loopback client and peer ports, its data in a temp directory."""

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__()
        self._own_dir = data_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="strata-etcd-")) if data_dir is None else data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.client_port = 0
        self.peer_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Start on new ports and wait until healthy; retried if a port was taken."""
        for _ in range(3):
            self.client_port, self.peer_port = free_port(), free_port()
            shutil.rmtree(self.dir / "data", ignore_errors=True)
            if self._launch(timeout):
                return self
        raise RuntimeError(f"etcd exited at start:\n{self.log()}")

    def restart(self, timeout: float = 30.0) -> EtcdServer:
        """Start again on the same data directory and ports (after stop() or kill())."""
        assert self.proc is None, "stop() or kill() first"
        if not self._launch(timeout):
            raise RuntimeError(f"etcd exited at restart:\n{self.log()}")
        return self

    def _launch(self, timeout: float) -> bool:
        """Spawn and wait until healthy; False if it exited (most likely a port race)."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            [
                binary,
                "--name=n1",
                f"--data-dir={self.dir / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=n1={peer}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=strata-test",
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000",
                "--quota-backend-bytes=268435456",
                "--logger=zap",
                "--log-level=warn",
            ]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self.healthy():
                return True
            time.sleep(0.05)
        log = self.log()
        self.kill()
        raise TimeoutError(f"etcd not healthy within {timeout}s:\n{log}")

    def healthy(self) -> bool:
        """etcd's /health: true once it has a leader and serves requests."""
        try:
            with NO_PROXY.open(f"{self.url}/health", timeout=1) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """stop() (which keeps the data), and delete the data directory if this server
        created it."""
        self.stop()
        if self._log is not None:
            self._log.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
