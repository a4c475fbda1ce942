"""``fmmodel watch``: a checkpoint watching a camera and a current log (or a replayed store) live.

:func:`watch` loads the model (``--model`` names a user's model, as for evaluate and predict:
a checkpoint never chooses code), rebuilds its windows from what the checkpoint recorded, opens
the sources, sizes the ring buffers from the windows and refuses what cannot work before
anything runs (a source that cannot open, a window that needs more history than the buffers
may hold, a video at a frame rate the windows were not built for), then runs the decision loop
(:mod:`fmmodel.online.loop`) until the sources end, ``duration`` passes or Ctrl-C. Producers
run in threads (real clocks) or inside the loop (``--speed max``). docs/online.md describes
every option and the measured figures.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fmdata.compute.memory import format_bytes
from fmdata.errors import FmDataError
from fmdata.store.handle import StoreLike, open_store
from fmdata.store.window_table import WindowParams
from fmmodel.data.preprocessing import checked_normalization, input_format
from fmmodel.data.windows import checkpoint_window_params, store_frame_size
from fmmodel.errors import FmModelError
from fmmodel.online.clocks import Clock, RealClock, VirtualClock
from fmmodel.online.cutting import WindowCutter
from fmmodel.online.health import HealthLimits, HealthMonitor
from fmmodel.online.live import CsvCurrentSource, MqttCurrentSource, VideoSource, epoch_seconds
from fmmodel.online.loop import Decision, DecisionLoop, Scorer, Writer
from fmmodel.online.metrics import LiveMetrics, PrometheusEndpoint
from fmmodel.online.publish import JsonLines, MqttPublisher
from fmmodel.online.replay import Faults, ReplaySource
from fmmodel.online.rings import CurrentRing, FrameRing
from fmmodel.protocol import PREPROCESSING_REFERENCE
from fmmodel.runtime.distributed import resolve_device
from fmmodel.scoring.alarms import WATCH_EVERY, WATCH_POLICY, AlarmPolicy
from fmmodel.scoring.inference import inference_precision, load_for_inference

FPS_TOLERANCE = 0.1  # a video's frame rate may differ this much (relative) from the one the windows were built at
RING_MARGIN_SECONDS = 2.0  # rings hold this much more than a window needs (late readers, the drop window)
LIVE_CURRENT_RATE = 25.0  # rows per second a live current source is sized for: the V1 layout's, 12.5x V2's
ASSUMED_FPS = 30.0  # a camera that reports no frame rate is sized as this
DEFAULT_BUFFER_MEMORY = 512 * 2**20


@dataclass(frozen=True)
class Sources:
    """What to watch: a replayed store, or live sources (a video, a current CSV or MQTT topic).

    ``speed``: stream seconds per second of a replay (None: ``max``, a virtual clock). ``inject``:
    faults injected into a replay (:class:`fmmodel.online.replay.Faults`). ``video_start``: the
    time of a video file's first frame (default: when it is opened); ``fps``: a video's frame
    rate when it reports none.
    """

    replay: StoreLike | None = None
    recording: str | None = None
    speed: float | None = 1.0
    inject: str | None = None
    video: str | None = None
    video_start: str | None = None
    fps: float | None = None
    current: str | None = None
    mqtt_broker: str | None = None
    mqtt_current_topic: str | None = None


@dataclass(frozen=True)
class WatchSettings:
    """How to decide and report: decision interval, alarm policy, health limits, outputs, buffers."""

    every: float = WATCH_EVERY
    duration: float | None = None
    policy: AlarmPolicy = WATCH_POLICY
    limits: HealthLimits = HealthLimits()
    events: str | None = None
    scores: str | None = None
    snapshots: str | None = None
    mqtt_events_topic: str | None = None
    metrics_every: float = 10.0
    prometheus: int | None = None
    prometheus_addr: str = "127.0.0.1"
    buffer_memory: int = DEFAULT_BUFFER_MEMORY
    current_rate: float | None = None
    device: str = "cpu"
    precision: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        checks = [("every", self.every, self.every > 0, "a decision interval > 0 seconds"),
                  ("duration", self.duration, self.duration is None or self.duration > 0, "a duration > 0 seconds"),
                  ("metrics_every", self.metrics_every, self.metrics_every >= 0, "seconds >= 0 (0: final line only)"),
                  ("buffer_memory", self.buffer_memory, self.buffer_memory > 0, "a size > 0"),
                  ("current_rate", self.current_rate, self.current_rate is None or self.current_rate > 0,
                   "rows per second > 0"),
                  ("threads", self.threads, self.threads is None or self.threads >= 1, "threads >= 1")]
        for name, value, ok, what in checks:
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise FmModelError(f"expected {what}, got {value!r}", field=name)


@dataclass
class WatchReport:
    """What a watch did: its model and windows, decisions, events and the final metrics."""

    checkpoint: str
    variant: str
    source: str
    window: dict[str, Any]
    policy: dict[str, Any]
    metrics: dict[str, Any]
    events: list[dict[str, Any]]
    decisions: list[Decision] = field(default_factory=list)
    interrupted: bool = False
    rings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for people."""
        m = self.metrics
        raised = [e for e in self.events if e["kind"] == "raise"]
        process = sum(e["type"] == "process" for e in raised)
        health = sorted({e["name"] for e in raised if e["type"] == "health"})
        lat = m.get("latency_ms", {})
        return (f"{self.source}: {m.get('decisions', 0):,} decisions ({m.get('skipped', 0):,} skipped, "
                f"{m.get('suppressed', 0):,} suppressed) by {self.variant}; {process} process alarm(s); health "
                f"alarms: {', '.join(health) or 'none'}; latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (without the per-decision list)."""
        d = dataclasses.asdict(self)
        d.pop("decisions")
        return d


def _fps_rule(meta_info: dict[str, Any], params: WindowParams, fps: float | None, where: str) -> None:
    """Refuse a video whose frame rate the windows cannot use: none known where one is needed, or one
    more than FPS_TOLERANCE away from the rate the checkpoint's windows were built at (clips are
    counted in frames: at another rate they would span another time)."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise FmModelError(f"expected a video with a frame rate > 0, got {fps}", where)
    built = meta_info.get("fps")
    if fps is None or not isinstance(built, (int, float)) or not built > 0:
        return
    if abs(fps - built) > FPS_TOLERANCE * built:
        span = (params.frames - 1) * params.frame_step
        raise FmModelError(f"expected a video at the {built:g} fps the checkpoint's windows were built at (a clip "
                           f"spans {span} frames: {span / built:.2f} s), got {fps:g} fps", where)


def _rows_per_second(stamps: np.ndarray) -> float:
    """The most current rows any one second of a replayed recording holds."""
    if not len(stamps):
        return 1.0
    _, counts = np.unique(np.floor(stamps - stamps[0]), return_counts=True)
    return float(counts.max())


def _ring_sizes(params: WindowParams, *, fps: float, rate: float, shape: tuple[int, int] | None,
                limits: HealthLimits, budget: int, current: bool) -> tuple[int, int]:
    """Return (frames, current rows) the rings hold; FmModelError (field ``buffer_memory``) when the
    windows need more than ``budget`` bytes."""
    margin = RING_MARGIN_SECONDS + limits.drop_window
    frames = (params.frames - 1) * params.frame_step + 1 + int(math.ceil(fps * margin))
    rows = int(math.ceil((math.ceil(params.current_seconds) + margin) * rate)) if current else 0
    per_frame = 24 + (0 if shape is None else shape[0] * shape[1] * 3)
    need = frames * per_frame + rows * 40
    if need > budget:
        raise FmModelError(f"expected the checkpoint's windows to fit the ring buffers ({format_bytes(budget)}), got "
                           f"windows that need {format_bytes(need)}: a clip spanning "
                           f"{(params.frames - 1) * params.frame_step + 1:,} frames and {params.current_seconds:g} s of "
                           f"current at {rate:g} rows/s (more history than the stream can hold)", field="buffer_memory")
    return frames, rows


@dataclass
class _Opened:
    """The sources of one watch, open, and what follows from them."""

    clock: Clock
    fps: float | None  # the video's frame rate (None: unknown)
    rate: float  # current rows per second the ring is sized for
    has_video: bool
    has_current: bool
    first_frame: int  # the stream's first frame number (clips are clamped to it)
    where: str  # the sources, for messages
    origin: float | None  # Unix time of stream time 0 (live sources)
    finite: list[Any]  # sources that end (a replay, a video file): the watch ends with them
    replay: ReplaySource | None = None
    video: VideoSource | None = None
    current: CsvCurrentSource | MqttCurrentSource | None = None


def _open_sources(sources: Sources, settings: WatchSettings, faults: Faults, *, shape: tuple[int, int] | None,
                  reads_current: bool, variant: str) -> _Opened:
    """Open the replayed store, or the live sources; FmModelError for one that cannot be used."""
    if sources.replay:
        try:
            store = open_store(sources.replay)  # the command's one open of its store
        except FmDataError as exc:
            raise FmModelError(exc.message, exc.path or str(sources.replay)) from None
        replay = ReplaySource(store, sources.recording, shape=shape, faults=faults)
        if reads_current and replay.rule is None:
            raise FmModelError(f"expected current rows in recording {replay.recording!r}: model {variant!r} "
                               f"reads current, got none", str(sources.replay))
        clock: Clock = VirtualClock(replay.start) if sources.speed is None else RealClock(replay.start, sources.speed)
        return _Opened(clock=clock, fps=replay.fps, rate=settings.current_rate or _rows_per_second(replay.current_stamps),
                       has_video=True, has_current=reads_current, first_frame=replay.first_frame,
                       where=f"{sources.replay} ({replay.recording})", origin=None, finite=[replay], replay=replay)
    now = time.time()
    start_epoch = None
    if sources.video_start:
        try:
            start_epoch = epoch_seconds(sources.video_start)
        except ValueError:
            raise FmModelError(f"expected a time like 2023-05-10 21:33:27 (local) or ISO 8601 with an offset, got "
                               f"{sources.video_start!r}", field="video_start") from None
    origin = float(math.floor(min(now, start_epoch if start_epoch is not None else now)))
    clock = RealClock(now - origin)
    current: CsvCurrentSource | MqttCurrentSource | None = None
    video = None if not sources.video else VideoSource(
        sources.video, shape=shape, clock=clock, start=None if start_epoch is None else start_epoch - origin,
        fps=sources.fps)
    if sources.current:
        current = CsvCurrentSource(sources.current, origin=origin)
    elif sources.mqtt_current_topic:
        assert sources.mqtt_broker is not None
        current = MqttCurrentSource(sources.mqtt_broker, sources.mqtt_current_topic, origin=origin)
    where = " + ".join(s for s in (sources.video, sources.current, sources.mqtt_current_topic) if s)
    return _Opened(clock=clock, fps=video.fps if video is not None else None,
                   rate=settings.current_rate or LIVE_CURRENT_RATE, has_video=video is not None,
                   has_current=current is not None, first_frame=0, where=where, origin=origin,
                   finite=[video] if video is not None and video.is_file else [], video=video, current=current)


def watch(checkpoint: str, sources: Sources, settings: WatchSettings = WatchSettings(), *, fmt: str = "auto",
          variant: str | None = None, trusted: Sequence[str] = (),
          on_metrics: Callable[[str, dict[str, Any]], None] | None = None,
          on_status: Callable[[dict[str, Any]], None] | None = None,
          on_ready: Callable[[dict[str, Any]], None] | None = None, keep_decisions: bool = False) -> WatchReport:
    """Watch ``sources`` with the model of ``checkpoint`` until they end (a replay, a video file),
    ``settings.duration`` passes, or Ctrl-C (KeyboardInterrupt, after the final metrics and with every
    event written). ``on_metrics(kind, snapshot)`` receives each metrics line ("metrics", and "final"
    at the end), ``on_status`` the snapshots of the status line, ``on_ready`` what was opened
    (rings, endpoint) before the first decision; ``keep_decisions`` keeps every decision in the report.
    """
    live = bool(sources.video or sources.current or sources.mqtt_current_topic)
    if sources.replay and live:
        raise FmModelError("expected --replay or live sources (--video, --current, --mqtt-current-topic), got both",
                           field="replay")
    if live and sources.speed != 1.0:
        raise FmModelError(f"expected --speed only with --replay (live sources run in real time), got "
                           f"{'max' if sources.speed is None else sources.speed}", field="speed")
    if sources.speed is not None and not (math.isfinite(sources.speed) and sources.speed > 0):
        raise FmModelError(f"expected a speed > 0 or max, got {sources.speed}", field="speed")
    if sources.inject and not sources.replay:
        raise FmModelError("expected --inject with --replay (faults are injected into a replayed store)",
                           field="inject")
    if sources.current and sources.mqtt_current_topic:
        raise FmModelError("expected one current source, --current or --mqtt-current-topic, got both", field="current")
    if sources.mqtt_current_topic and not sources.mqtt_broker:
        raise FmModelError("expected --mqtt-broker with --mqtt-current-topic", field="mqtt_broker")
    if settings.mqtt_events_topic and not sources.mqtt_broker:
        raise FmModelError("expected --mqtt-broker with --mqtt-events-topic", field="mqtt_broker")
    faults = Faults.parse(sources.inject)

    if settings.threads:
        torch.set_num_threads(settings.threads)  # one decision is a batch of one: more threads mostly wait
    device = resolve_device(settings.device)
    model, meta = load_for_inference(checkpoint, fmt, variant, device, trusted, settings.precision)
    precision = inference_precision(model, settings.precision, device)
    data = meta.description
    reads_video, reads_current = "video" in data.inputs, "current" in data.inputs
    if not sources.replay:
        if reads_video and not sources.video:
            raise FmModelError(f"expected --video (or --replay): model {meta.variant!r} reads video", field="video")
        if reads_current and not (sources.current or sources.mqtt_current_topic):
            raise FmModelError(f"expected --current or --mqtt-current-topic (or --replay): model {meta.variant!r} "
                               f"reads current", field="current")
    params = WindowParams.from_dict({**checkpoint_window_params(meta).to_dict(), "policy": "reference"})
    prep = meta.preprocessing.get("name", PREPROCESSING_REFERENCE)
    fmt_in = input_format(prep, "cpu")  # inputs are made on the CPU, as the lazy dataset makes them
    if fmt_in.orientation != meta.orientation:
        raise FmModelError(f"expected inputs in the checkpoint's orientation {meta.orientation!r}, but "
                           f"preprocessing {prep!r} delivers {fmt_in.orientation!r}", checkpoint)
    norm = None
    if prep != PREPROCESSING_REFERENCE:
        norm = checked_normalization(meta.preprocessing.get("normalization"), f"{checkpoint} (its normalisation)")
    shape = store_frame_size(meta) if reads_video else None

    opened = _open_sources(sources, settings, faults, shape=shape, reads_current=reads_current,
                           variant=meta.variant)
    replay, video, current_src, clock = opened.replay, opened.video, opened.current, opened.clock
    fps, has_video, has_current, where = opened.fps, opened.has_video, opened.has_current, opened.where
    if has_video and reads_video:
        _fps_rule(meta.info, params, fps, sources.video or where)
    n_frames, n_rows = _ring_sizes(params, fps=fps or ASSUMED_FPS, rate=opened.rate, shape=shape,
                                   limits=settings.limits, budget=settings.buffer_memory, current=has_current)
    frames = FrameRing(n_frames, shape) if has_video else None
    current = CurrentRing(n_rows) if has_current else None
    stop = threading.Event()
    producers: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    if replay is not None:
        replay.advance(replay.start, frames, current)  # the history the first windows reach into, and frame one
        if not clock.virtual:
            producers.append((replay.run, (clock, frames, current, stop)))
    if video is not None:
        assert frames is not None
        producers.append((video.run, (clock, frames, stop)))
    if current_src is not None:
        assert current is not None
        producers.append((current_src.run, (clock, current, stop)))

    writers: list[Writer] = []
    closers: list[Callable[[], None]] = []
    endpoint: PrometheusEndpoint | None = None
    threads: list[threading.Thread] = []
    started = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        if settings.events:
            log = JsonLines(settings.events, sync=True, field="events")
            writers.append(log)
            closers.append(log.close)
        scores = None
        if settings.scores:
            scores = JsonLines(settings.scores, sync=False, field="scores")
            closers.append(scores.close)
        if settings.mqtt_events_topic:
            assert sources.mqtt_broker is not None
            pub = MqttPublisher(sources.mqtt_broker, settings.mqtt_events_topic)
            writers.append(pub)
            closers.append(pub.close)
        if settings.snapshots:
            os.makedirs(settings.snapshots, exist_ok=True)
        health = HealthMonitor(settings.limits, video=has_video, current=has_current, fps=fps, every=settings.every,
                               reads_video=reads_video, reads_current=reads_current)
        cutter = WindowCutter(params, orientation=meta.orientation, norm=norm, video=reads_video,
                              current=reads_current, first_frame=opened.first_frame)
        scorer = Scorer(model, inputs=data.inputs, task=data.task, orientation=meta.orientation, device=device,
                        precision=precision, name=meta.variant, user=meta.source is not None)
        scorer(cutter.blank(shape))  # warm-up: the first call's one-off costs are no decision's latency
        scorer.calls = 0
        if replay is not None and isinstance(clock, RealClock):
            clock.restart()  # the replay's stream time starts now, with its loop
        loop = DecisionLoop(clock=clock, cutter=cutter, scorer=scorer, frames=frames, current=current, replay=replay,
                            every=settings.every, policy=settings.policy, health=health, metrics=LiveMetrics(),
                            writers=writers, scores=scores, snapshots=settings.snapshots, origin=opened.origin,
                            finite=opened.finite,
                            duration=settings.duration, metrics_every=settings.metrics_every, on_metrics=on_metrics,
                            on_status=on_status, keep_decisions=keep_decisions, started=started, fps=fps)
        if settings.prometheus is not None:
            endpoint = PrometheusEndpoint(settings.prometheus, settings.prometheus_addr, loop.latest)
            closers.append(endpoint.close)
        rings = {"frames": n_frames if frames is not None else 0, "current_rows": n_rows if current is not None else 0,
                 "bytes": (frames.nbytes if frames is not None else 0) + (current.nbytes if current is not None else 0)}
        if on_ready is not None:
            on_ready({"rings": rings, "prometheus": endpoint.url if endpoint else None, "source": where})
        for target, args in producers:
            th = threading.Thread(target=target, args=args, daemon=True, name=f"watch-{target.__qualname__}")
            th.start()
            threads.append(th)
        interrupted = False
        try:
            result = loop.run()
        except KeyboardInterrupt:
            interrupted = True
            result = loop.result
        report = WatchReport(checkpoint=os.fspath(checkpoint), variant=meta.variant, source=where,
                             window=params.to_dict(), policy=settings.policy.to_dict(), metrics=result.metrics,
                             events=result.events, decisions=result.decisions, interrupted=interrupted, rings=rings)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=5.0)
        for close in reversed(closers):
            close()
    if report.interrupted:
        raise KeyboardInterrupt(f"interrupted after {report.metrics.get('decisions', 0):,} decisions; "
                                f"{len(report.events)} event(s) written" + (f" to {settings.events}" if settings.events
                                                                           else ""))
    return report
