"""What the test servers (moto, etcd) share: a subprocess with its output captured for
failure messages, and the faults the tests inject (pause, kill) and the stop after them."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import urllib.request
from typing import Any

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Probes go straight to loopback even if the environment sets an HTTP proxy."""


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
