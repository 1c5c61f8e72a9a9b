"""Run a Strata broker as a real subprocess, the way a user starts it, and read its /metrics.

One class for the tests and the benchmarks: both need a `strata serve` on loopback with its own
data directory, a log to quote on failure, and a clean stop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devkit.procs import NO_PROXY, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


def scrape(url: str, timeout: float = 10.0) -> dict[str, float]:
    """A Prometheus /metrics page as {'name{label="v",...}': value} (labels sorted)."""
    from prometheus_client.parser import text_string_to_metric_families

    with NO_PROXY.open(url, timeout=timeout) as resp:  # loopback, no proxy
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def metric(port: int, sample: str) -> float:
    """One sample from a broker's /metrics (its --metrics-listen port), named as it is
    exposed: 'strata_uploads_total', 'strata_object_store_bytes_total{direction="down"}'."""
    return scrape(f"http://127.0.0.1:{port}/metrics")[sample]


class BrokerProcess:
    """A `strata serve` process on loopback with its own data directory.

    `port`: fixed, else a free one chosen now (kept across restarts). `log_path`: where its
    output goes (default DATA_DIR/../broker-PORT.log). `metrics`: also serve /metrics on a free
    loopback port (`metrics_url`). `env`: added to the environment (object-store credentials).
    `own_session`: its own process group, so a Ctrl-C of the caller reaches only the caller,
    which then stops the broker itself (the benchmarks). `port_attempts`: how many fresh ports
    to try when the broker exits at start (the free port may be taken between probe and bind).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *extra_args: str,
        log_path: Path | None = None,
        metrics: bool = False,
        env: dict[str, str] | None = None,
        own_session: bool = False,
        port_attempts: int = 1,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = log_path or self.data_dir.parent / f"broker-{self.port}.log"
        self.metrics_port = free_port() if metrics else 0
        self.env = dict(env or {})
        self.own_session = own_session
        self.port_attempts = max(1, port_attempts)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        metrics = []
        if self.metrics_port:
            metrics = ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        return [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.bootstrap,
            *metrics,
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> BrokerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.port_attempts):
            if attempt:
                self.port = free_port()
                if self.metrics_port:
                    self.metrics_port = free_port()
            if self._launch(timeout):
                return self
        assert self.proc is not None
        raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log()}")

    def _launch(self, timeout: float) -> bool:
        """Spawn and wait until it listens; False if it exited first."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=REPO_ROOT if self.own_session else None,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"broker did not listen within {timeout}s:\n{self.log()}")

    def log(self, n: int = 20000) -> str:
        """The last `n` characters the broker printed."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 4000) -> str:
        return self.log(n)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int | None:
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
