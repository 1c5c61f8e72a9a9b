"""moto's standalone S3 server as a subprocess, for tests that need a real HTTP endpoint.

A subprocess (not moto's in-process mock) because brokers under test run in their own
processes, and because SIGSTOP on it is a faithful outage: connections hang instead of
being refused, and the objects are still there after SIGCONT.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
from typing import Any

from devkit.procs import NO_PROXY, ServerProcess, free_port

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer(ServerProcess):
    """`python -m moto.server` on a free loopback port; all state is in its memory."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
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
            self.port = free_port()
            self._spawn(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
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
            with NO_PROXY.open(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP error status is still an answer
        except OSError:
            return False

    def stop(self) -> None:
        super().stop()
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
