"""Process plumbing shared by tests and benchmarks: free ports, polling, and the base of the
helper servers (moto, etcd): a subprocess with its output captured for failure messages, and
the faults the tests inject (pause, kill) and the stop after them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Probes go straight to loopback even if the environment sets an HTTP proxy."""


def free_port() -> int:
    """A loopback port that was free a moment ago (good enough for tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.2, quiet: bool = False
) -> bool:
    """Poll `check` until it holds, with one last try at the deadline. `quiet`: a check
    that raises counts as not holding yet (asking a cluster whose leaders move)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:
            if not quiet:
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ServerProcess:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._paused = False

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start `argv` with stdout and stderr into the log (kept across restarts)."""
        if self._log is None or self._log.closed:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - read back on failure
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )

    def log(self) -> str:
        """The last 20 kB the server printed, for assertion messages."""
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read()[-20000:].decode(errors="replace")

    def pause(self) -> None:
        """SIGSTOP: a hung server; connections stay open but nothing answers until resume()."""
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause(); the server's state is intact."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL, a crash: no chance to flush or close connections cleanly."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._paused = False

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers) and reap; resumes a paused server first so it
        can act on the signal. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                if self._paused:
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        self._paused = False
