"""py-spy on the Strata broker: record one phase, then summarize its event-loop thread."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT

# --- py-spy -------------------------------------------------------------------------------


class Profiler:
    """py-spy record on the broker for one phase; SIGINT at the end makes it write its file."""

    def __init__(self, pid: int, out: Path, max_seconds: float) -> None:
        self.out = out
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy on PATH (pip install py-spy)")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "-p",
                str(pid),
                "-o",
                str(out),
                "--format",
                "speedscope",
                "--idle",
                "--function",
                "-r",
                "100",
                "-d",
                str(int(max_seconds) + 1),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> dict[str, Any] | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        if not self.out.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
            return None
        return summarize_speedscope(self.out)


def summarize_speedscope(path: Path, top: int = 15) -> dict[str, Any]:
    """Hot spots of the broker's event-loop thread, from a py-spy speedscope file (--idle)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]

    def label(i: int) -> str:
        f = frames[i]
        file = f.get("file") or "?"
        with contextlib.suppress(ValueError):
            file = str(Path(file).relative_to(REPO_ROOT))
        if "site-packages/" in file:
            file = file.split("site-packages/", 1)[1]
        elif "/lib/python3" in file:
            file = "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[1]
        return f"{f['name']} ({file})"

    threads = {}
    main: dict[str, Any] | None = None
    for prof in data["profiles"]:
        threads[prof["name"]] = len(prof["samples"])
        if '"MainThread"' in prof["name"]:
            main = prof
    if main is None:
        return {"file": str(path), "threads": threads, "error": "no MainThread profile"}
    samples = main["samples"]
    total = len(samples) or 1
    self_counts: Counter[int] = Counter()
    incl_counts: Counter[int] = Counter()
    idle = 0
    for stack in samples:
        if not stack:
            continue
        leaf = stack[-1]
        self_counts[leaf] += 1
        if frames[leaf]["name"].endswith("select") or frames[leaf]["name"] == "_run_once_idle":
            idle += 1
        for i in set(stack):
            incl_counts[i] += 1
    by_self: defaultdict[str, int] = defaultdict(int)
    for i, n in self_counts.items():
        by_self[label(i)] += n
    by_incl: defaultdict[str, int] = defaultdict(int)
    for i, n in incl_counts.items():
        by_incl[label(i)] = max(by_incl[label(i)], n)
    boring = (
        "_run_module_as_main",
        "_run_code",
        "<module>",
        "main (",
        "run (",
        "Runner.run",
        "run_until_complete",
        "run_forever",
        "_run_once (",
        "Handle._run",
        "Context.run",
    )
    return {
        "file": str(path),
        "threads": threads,
        "main_thread_samples": len(samples),
        "main_thread_idle_share": idle / total,
        "self": [
            (name, n / total) for name, n in sorted(by_self.items(), key=lambda kv: -kv[1])[:top]
        ],
        "inclusive": [
            (name, n / total)
            for name, n in sorted(by_incl.items(), key=lambda kv: -kv[1])
            if not any(name.startswith(b) or b in name for b in boring)
        ][:top],
    }
