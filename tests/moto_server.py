"""moto's standalone S3 server as a subprocess, for tests that need a real HTTP endpoint.

A subprocess (not moto's in-process mock) because brokers under test run in their own
processes, and because SIGSTOP on it is a faithful outage: connections hang instead of
being refused, and the objects are still there after SIGCONT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Probes go straight to loopback even if the environment sets an HTTP proxy."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """`python -m moto.server` on a free loopback port; all state is in its memory."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._paused = False
        self._s3: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Test credentials and region; merge onto os.environ for a broker subprocess."""
        return dict(TEST_CREDENTIALS)

    def start(self, timeout: float = 30.0) -> MotoServer:
        """Start and wait until it answers HTTP; retried on a new port if one was taken."""
        deadline = time.monotonic() + timeout
        for _ in range(3):
            self.port = _free_port()
            if self._log is not None:
                self._log.close()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - read back on failure
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **TEST_CREDENTIALS},
            )
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # most likely lost the port race: try another
                if self._answers():
                    return self
                time.sleep(0.1)
            else:
                log = self.log()
                self.stop()
                raise TimeoutError(f"moto server did not answer within {timeout}s:\n{log}")
        log = self.log()
        code = self.proc.returncode if self.proc else None
        self.stop()
        raise RuntimeError(f"moto server exited with {code}:\n{log}")

    def _answers(self) -> bool:
        try:
            with _NO_PROXY.open(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP error status is still an answer
        except OSError:
            return False

    def log(self) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read()[-20000:].decode(errors="replace")

    def pause(self) -> None:
        """SIGSTOP: requests hang (the kernel still accepts connections) until resume()."""
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause(); the in-memory buckets are intact."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self._paused = False

    def stop(self) -> None:
        """Terminate (kill if it lingers) and reap. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                if self._paused:
                    os.kill(proc.pid, signal.SIGCONT)  # so it can act on SIGTERM
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        self._paused = False
        self._s3 = None
        if self._log is not None:
            self._log.close()

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, test credentials)."""
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
                aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
            )
        return self._s3

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        ):
            keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        return sorted(keys)
