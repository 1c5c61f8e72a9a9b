"""Small time series the console keeps in memory: a group's total lag over time, and
object-store counters for rates. Taken whenever a page or its JSON is asked for (a page
refreshes itself every few seconds while it is open), so nothing runs while nobody looks.
Thread-safe: the HTTP listener serves requests on several threads."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping


class LagHistory:
    """Per group, (time, total lag) points, at least `min_gap_s` apart, the newest
    `points` kept; at most `groups` groups (the least recently seen forgotten)."""

    def __init__(self, points: int = 240, min_gap_s: float = 1.0, groups: int = 1000) -> None:
        self.points = points
        self.min_gap_s = min_gap_s
        self.groups = groups
        self._series: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, group: str, t: float, lag: int) -> list[tuple[float, int]]:
        """Adds the point (unless the last one is too recent) and returns the series."""
        with self._lock:
            series = self._series.get(group)
            if series is None:
                series = self._series[group] = deque(maxlen=self.points)
                while len(self._series) > self.groups:
                    self._series.popitem(last=False)
            self._series.move_to_end(group)
            if not series or t - series[-1][0] >= self.min_gap_s:
                series.append((t, lag))
            return list(series)


class CounterHistory:
    """Samples of named counters within the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0, min_gap_s: float = 0.5) -> None:
        self.window_s = window_s
        self.min_gap_s = min_gap_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque()
        self._lock = threading.Lock()

    def record(self, t: float, values: Mapping[str, float]) -> dict[str, list[tuple[float, float]]]:
        """Adds a sample; returns each counter's (time, value) samples in the window."""
        with self._lock:
            if not self._samples or t - self._samples[-1][0] >= self.min_gap_s:
                self._samples.append((t, dict(values)))
            while len(self._samples) > 2 and self._samples[0][0] < t - self.window_s:
                self._samples.popleft()
            out: dict[str, list[tuple[float, float]]] = {k: [] for k in values}
            for st, sv in self._samples:
                for k in out:
                    if k in sv:
                        out[k].append((st, sv[k]))
            return out
