"""Live metrics of ``fmmodel watch``: what the loop did and what it costs, as a JSON line, a
Prometheus endpoint and a one-line terminal status.

- decision latency (cutting the window, the model, the alarm update) p50/p95/p99 and the
  *input age* at the decision (from the anchor frame's arrival to its score), over the last
  :data:`WINDOW` decisions (a fixed ring: memory stays flat however long the watch runs);
- frames in and dropped (the frame rate's promise over the stream's span less the frames that
  came), current rows in, rows skipped as unreadable, decisions made, skipped (the model was still
  busy: never queued), suppressed (inputs unhealthy) and stale (no new frame since the last one);
- the process's CPU share (of one core, over the last second or more) and resident memory (RSS).

The Prometheus endpoint (``prometheus-client``, the ``online`` extra) serves the same figures
at ``/metrics`` whenever it is scraped: counters as ``fmf_watch_*_total``, the rest as gauges.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil

from fmmodel.errors import FmModelError

WINDOW = 4096  # decisions whose latency and input age the percentiles cover
CPU_INTERVAL = 1.0  # seconds the CPU share is measured over (at least)
COUNTERS = ("frames_in", "frames_dropped", "current_rows_in", "current_rows_bad", "decisions", "skipped",
            "suppressed", "stale", "alarms_raised", "health_raised")


class LiveMetrics:
    """Counters and timings of one watch, read by :meth:`snapshot`."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.latency: deque[float] = deque(maxlen=WINDOW)
        self.age: deque[float] = deque(maxlen=WINDOW)
        self._proc = psutil.Process()
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()
        self._share: float | None = None
        self.lock = threading.Lock()  # the Prometheus thread reads while the loop writes
        self.last: dict[str, Any] = {}

    def _cpu_seconds(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def decision(self, latency: float, age: float) -> None:
        """Record one decision's latency (real seconds) and input age (seconds)."""
        with self.lock:
            self.counts["decisions"] += 1
            self.latency.append(latency)
            if math.isfinite(age):
                self.age.append(age)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self.lock:
            self.counts[name] += n

    def snapshot(self, **state: Any) -> dict[str, Any]:
        """Return the figures now (a JSON-able dict), with ``state`` (stream time, alarms...) added.

        The CPU share covers the time since the previous snapshot at least CPU_INTERVAL ago."""
        cpu, wall = self._cpu_seconds(), time.monotonic()
        with self.lock:
            lat = np.asarray(self.latency, np.float64)
            age = np.asarray(self.age, np.float64)
            counts = dict(self.counts)
        if wall - self._wall >= CPU_INTERVAL or self._share is None:  # CPU times tick coarsely: not over less
            share = (cpu - self._cpu) / (wall - self._wall) if wall > self._wall else 0.0
            self._cpu, self._wall, self._share = cpu, wall, share
        share = self._share
        snap = {**state, **counts,
                "latency_ms": _percentiles(lat * 1e3), "input_age_s": _percentiles(age),
                "cpu_share": round(share, 3), "rss_mib": round(self._proc.memory_info().rss / 2**20, 1)}
        with self.lock:
            self.last = snap
        return snap


def _percentiles(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"p50": None, "p95": None, "p99": None}
    p = np.percentile(x, [50, 95, 99])
    return {"p50": round(float(p[0]), 4), "p95": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


def json_line(snap: dict[str, Any]) -> str:
    """One metrics line (compact JSON)."""
    return json.dumps(snap, separators=(",", ":"), default=str)


def status_line(snap: dict[str, Any]) -> str:
    """The terminal's one-line status: stream time, last score, alarms, rates and latency."""
    lat = snap["latency_ms"]
    alarm = "ALARM" if snap.get("alarm") else "ok"
    health = ",".join(snap.get("health") or []) or "healthy"
    score = "-" if snap.get("score") is None else f"{snap['score']:.3f}"
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.0f}"
    return (f"t={snap.get('stream_time', 0):.1f}s score={score} {alarm} [{health}] frames {snap['frames_in']:,} "
            f"(-{snap['frames_dropped']:,}) decisions {snap['decisions']:,} skipped {snap['skipped']:,} "
            f"p50 {p50} ms cpu {snap['cpu_share']:.0%} rss {snap['rss_mib']:.0f} MiB")


class PrometheusEndpoint:
    """``/metrics`` on ``addr:port`` (a thread of ``prometheus-client``), serving ``read()``'s figures."""

    def __init__(self, port: int, addr: str, read: Callable[[], dict[str, Any]]) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server  # optional: the "online" extra
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise FmModelError("expected prometheus-client for --prometheus (pip install 'fmf-toolkit[online]'), "
                               "got none installed", field="prometheus") from None

        class Collector:
            def collect(self) -> Iterator[Any]:
                snap = read()
                for name in COUNTERS:
                    yield CounterMetricFamily(f"fmf_watch_{name}", f"watch: {name.replace('_', ' ')}",
                                              value=snap.get(name, 0))
                for key, help_text in (("latency_ms", "decision latency (ms)"), ("input_age_s", "input age (s)")):
                    g = GaugeMetricFamily(f"fmf_watch_{key}", help_text, labels=["quantile"])
                    for q, v in (snap.get(key) or {}).items():
                        if v is not None:
                            g.add_metric([q], v)
                    yield g
                for key in ("cpu_share", "rss_mib", "stream_time", "score"):
                    v = snap.get(key)
                    if v is not None:
                        yield GaugeMetricFamily(f"fmf_watch_{key}", f"watch: {key.replace('_', ' ')}", value=v)
                yield GaugeMetricFamily("fmf_watch_alarm", "1 while a process alarm is raised",
                                        value=1.0 if snap.get("alarm") else 0.0)
                g = GaugeMetricFamily("fmf_watch_health_alarm", "1 while a health alarm is raised", labels=["name"])
                for name in snap.get("health_checked") or []:
                    g.add_metric([name], 1.0 if name in (snap.get("health") or []) else 0.0)
                yield g

        registry = CollectorRegistry()
        registry.register(Collector())
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as exc:
            raise FmModelError(f"expected a free port for the Prometheus endpoint, got {exc.strerror or exc}",
                               f"{addr}:{port}", field="prometheus") from None
        self.url = f"http://{addr}:{self._server.server_port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
