"""``fmmodel watch``: a thin click wrapper over fmmodel.online.watch."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from fmdata.store import Location
from fmmodel.online import HealthLimits, Sources, WatchSettings, watch
from fmmodel.online.metrics import status_line
from fmmodel.online.watch import DEFAULT_BUFFER_MEMORY
from fmmodel.scoring.alarms import WATCH_EVERY

from .errors import user_errors
from .model_options import (
    alarm_options,
    checkpoint_option,
    format_option,
    policy_from,
    trusted_option,
    variant_option,
)
from .options import BYTES, STORE, device_options, grouped, json_option, progress_flag, progress_option, stack

L = HealthLimits()


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    """``--speed``: a number > 0, or ``max`` (None: the virtual clock)."""
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        speed = float("nan")
    if not speed > 0 or speed == float("inf"):
        raise click.BadParameter(f"expected a number > 0 or max, got {value!r}", ctx=ctx, param=param)
    return speed


source_options = stack(
    click.option("--replay", type=STORE, default=None,
                 help="Replay a store on its own clock (frame_time, current times) instead of live sources."),
    click.option("--recording", default=None, metavar="NAME",
                 help="The recording to replay (name or id; default: the store's first)."),
    click.option("--speed", default="1", show_default=True, callback=_speed, metavar="1|N|max",
                 help="Replay speed: 1 real time, N times real time, max a virtual clock as fast as the CPU allows "
                      "(deterministic: nothing is skipped)."),
    click.option("--inject", default=None, metavar="FAULTS",
                 help="Faults injected into the replay, seconds from its start: drop=SHARE[@A-B], freeze=A-B, "
                      "gap=A-B (current), skew=SECONDS[@A] (current ahead of video); comma-separated."),
    click.option("--video", default=None, metavar="SOURCE",
                 help="Live video: a camera index (0), an RTSP/HTTP stream URL or a video file (played in real time)."),
    click.option("--video-start", default=None, metavar="TIME",
                 help="When a video file's first frame was taken (2023-05-10 21:33:27, local time, or ISO 8601 with "
                      "an offset); default: when it is opened."),
    click.option("--fps", type=float, default=None, help="The video's frame rate, when it reports none."),
    click.option("--current", type=click.Path(), default=None, metavar="CSV",
                 help="Live current: a CSV in the V2 layout (timestamp,phase_A,phase_B,phase_C), followed as it "
                      "grows."),
    click.option("--mqtt-broker", default=None, metavar="HOST[:PORT]",
                 help="MQTT broker for --mqtt-current-topic and --mqtt-events-topic (needs paho-mqtt)."),
    click.option("--mqtt-current-topic", default=None, metavar="TOPIC",
                 help="Live current from this MQTT topic: messages of V2-layout CSV lines."),
)

health_options = grouped("health", stack(
    click.option("--frame-timeout", type=float, default=L.frame_timeout, show_default=True,
                 help="Health alarm no_frame: no new frame for longer than this (seconds)."),
    click.option("--frozen-after", type=float, default=L.frozen_after, show_default=True,
                 help="Health alarm frozen: the same image for longer than this (seconds)."),
    click.option("--current-timeout", type=float, default=L.current_timeout, show_default=True,
                 help="Health alarm current_gap: no new current row for longer than this (seconds)."),
    click.option("--max-skew", type=float, default=L.max_skew, show_default=True,
                 help="Health alarm clock_skew: the current's and the video's clocks disagree by more (seconds)."),
    click.option("--max-drop", type=float, default=L.max_drop, show_default=True,
                 help=f"Health alarm dropped: more than this share of the frames promised over {L.drop_window:g} s "
                      "did not come."),
    click.option("--latency-budget", type=float, default=None,
                 help="Health alarm latency: a decision took longer (seconds; default: --every)."),
))


@click.command("watch")
@checkpoint_option
@format_option
@variant_option
@trusted_option
@source_options
@click.option("--every", type=float, default=WATCH_EVERY, show_default=True,
              help="Seconds between decisions; a decision due while the model is busy is skipped, never queued.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds of stream time.")
@alarm_options
@health_options
@click.option("--events", type=click.Path(), default=None, metavar="FILE",
              help="Append alarm events (process and health) to this JSON-lines file, each line synced.")
@click.option("--scores", type=click.Path(), default=None, metavar="FILE",
              help="Append every decision (time, anchor frame, score, latency, input age) to this JSON-lines file.")
@click.option("--snapshots", type=click.Path(), default=None, metavar="DIR",
              help="Write a picture per process alarm (the anchor frame, the predicted mask's outline) here.")
@click.option("--mqtt-events-topic", default=None, metavar="TOPIC",
              help="Also publish every event as JSON to this MQTT topic (with --mqtt-broker).")
@click.option("--metrics-every", type=float, default=10.0, show_default=True,
              help="Seconds between metrics lines (JSON) on stdout; 0: only the final line.")
@click.option("--prometheus", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve the metrics for Prometheus at http://ADDR:PORT/metrics (needs prometheus-client).")
@click.option("--prometheus-addr", default="127.0.0.1", show_default=True, help="Address the endpoint listens on.")
@click.option("--buffer-memory", type=BYTES, default=DEFAULT_BUFFER_MEMORY, show_default="512MiB", metavar="SIZE",
              help="Most memory the ring buffers of frames and current rows may take.")
@click.option("--current-rate", type=float, default=None, metavar="HZ",
              help="Current rows per second the ring is sized for (default: a replay's own; 25 for live sources).")
@device_options
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of the model (torch; default: torch's choice). One decision is a batch of one.")
@json_option
@progress_option
@user_errors
def watch_cmd(checkpoint: str, fmt: str, variant: str | None, trusted: tuple[str, ...], replay: Location | None,
              recording: str | None, speed: float | None, inject: str | None, video: str | None,
              video_start: str | None, fps: float | None, current: str | None, mqtt_broker: str | None,
              mqtt_current_topic: str | None, every: float, duration: float | None, alarm: dict[str, Any],
              health: dict[str, Any], events: str | None, scores: str | None, snapshots: str | None,
              mqtt_events_topic: str | None, metrics_every: float, prometheus: int | None, prometheus_addr: str,
              buffer_memory: int, current_rate: float | None, device: str, precision: str | None,
              threads: int | None, as_json: bool, progress: bool | None) -> None:
    """Watch a camera and a current log (or replay a store) with the model of --checkpoint: a
    decision every --every seconds, alarms with smoothing, hysteresis, on-delay and hold, health
    alarms about the inputs, metrics as JSON lines on stdout. Ctrl-C stops it (exit 130) with every
    event written."""
    policy = policy_from(alarm)
    settings = WatchSettings(every=every, duration=duration, policy=policy, limits=HealthLimits(**health),
                             events=events, scores=scores, snapshots=snapshots, mqtt_events_topic=mqtt_events_topic,
                             metrics_every=metrics_every, prometheus=prometheus, prometheus_addr=prometheus_addr,
                             buffer_memory=buffer_memory, current_rate=current_rate, device=device,
                             precision=precision, threads=threads)
    sources = Sources(replay=None if replay is None else str(replay), recording=recording, speed=speed,
                      inject=inject, video=video, video_start=video_start, fps=fps, current=current,
                      mqtt_broker=mqtt_broker, mqtt_current_topic=mqtt_current_topic)
    show_status = progress_flag(progress)

    def on_metrics(kind: str, snap: dict[str, Any]) -> None:
        if show_status:
            click.echo("", err=True)  # end the status line before a line on the terminal
        click.echo(json.dumps({"kind": kind, **snap}, separators=(",", ":"), default=str))

    def on_status(snap: dict[str, Any]) -> None:
        sys.stderr.write("\r" + status_line(snap)[:150] + "\033[K")
        sys.stderr.flush()

    def on_ready(info: dict[str, Any]) -> None:
        endpoint = f"; Prometheus at {info['prometheus']}" if info["prometheus"] else ""
        click.echo(f"watching {info['source']}: rings of {info['rings']['frames']:,} frames and "
                   f"{info['rings']['current_rows']:,} current rows{endpoint}", err=True)

    report = watch(checkpoint, sources, settings, fmt=fmt, variant=variant, trusted=trusted,
                   on_metrics=None if as_json else on_metrics, on_status=on_status if show_status else None,
                   on_ready=on_ready)
    if as_json:
        click.echo(json.dumps(report.to_dict(), separators=(",", ":"), default=str))
    else:
        click.echo(report.summary(), err=True)
