"""Live sources of ``fmmodel watch``: a camera, stream or video file (OpenCV), a current CSV being
appended (followed like ``tail -f``) and an MQTT topic of current rows.

Live items are stamped in stream seconds: seconds since the watch's *origin*, a whole second of
the Unix clock (:func:`epoch_seconds` reads a timestamp; naive ones are local wall-clock time, as
a V2 log writes them). A camera or stream frame is stamped when it is read (it has no clock of
its own); a video file's frame ``i`` is stamped ``start + i / fps`` and released at that time, so a
file plays as the camera that recorded it would have. A current row is stamped with its own
timestamp. Each source runs in its own thread and pushes into a ring; it never waits for the
decision loop, so the loop always finds the newest data and latency cannot build up behind it
(the capture thread keeps reading, the ring keeps only the newest frames).

Current rows are text in the V2 layout (``timestamp,phase_A,phase_B,phase_C``; docs/dataset.md):
lines appended to a CSV file, or lines in an MQTT message (``paho-mqtt``, the ``online`` extra).
A row that does not parse, or that steps back in time, is skipped and counted; a file whose
header is not that layout, or none of whose rows can be read, is refused at start-up.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
import os
import threading
import time
from typing import Any

import cv2
import numpy as np

from fmdata.sources.layouts import V2_CURRENT_HEADER
from fmdata.store.window_table import RULE_SECONDS, RULE_SPAN
from fmmodel.errors import FmModelError
from fmmodel.online.clocks import NAP, Clock
from fmmodel.online.rings import CurrentRing, FrameRing, fit_frame

REOPEN_AFTER = 1.0  # seconds of failed reads before a camera or stream is opened again
MQTT_PORT = 1883
FFMPEG_LOG = "OPENCV_FFMPEG_LOGLEVEL"
HISTORY_BYTES = 8 << 20  # the end of a current log read at start-up: about 130,000 rows, far more than a window needs


def epoch_seconds(text: str) -> float:
    """Return a timestamp (``2023-05-10 21:33:27``, ISO 8601, optionally with a UTC offset or ``Z``)
    as seconds of the Unix clock; a naive time is local wall-clock time. ValueError when it is none."""
    return dt.datetime.fromisoformat(text.strip()).timestamp()


def _wait(clock: Clock, t: float, stop: threading.Event) -> bool:
    """Wait until stream time ``t`` or ``stop``; return False when stopped."""
    while not stop.is_set():
        if clock.now() >= t:
            return True
        time.sleep(min(NAP, max(0.0, (t - clock.now()) / clock.speed)))
    return False


class VideoSource:
    """Frames from OpenCV: a camera index (``0``), a stream URL (``rtsp://``, ``http://``) or a video file.

    ``shape``: (height, width) of the frames in the ring (resized on arrival, BGR turned RGB).
    ``start``: stream time of a file's first frame (default: when it is opened). ``fps``: the
    frame rate when the source reports none (files must have one).
    """

    def __init__(self, spec: str, *, shape: tuple[int, int] | None, clock: Clock, start: float | None = None,
                 fps: float | None = None) -> None:
        self.spec, self.shape = spec, shape
        self.is_file = not spec.isdigit() and "://" not in spec
        if self.is_file and not os.path.isfile(spec):
            raise FmModelError("expected a camera index, a stream URL or a video file, got nothing there", spec)
        self._cap = self._open()
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps else (reported if math.isfinite(reported) and reported > 0 else None)
        if self.is_file and not self.fps:
            raise FmModelError("expected a video file with a frame rate, got none (give --fps)", spec)
        self.start = clock.now() if start is None else float(start)
        self.done = False
        self.read_failures = 0

    def _open(self) -> Any:
        # OpenCV and FFmpeg log every failed open to stderr: the error below says it in one line
        level = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        ffmpeg = os.environ.get(FFMPEG_LOG)
        os.environ[FFMPEG_LOG] = "-8"  # AV_LOG_QUIET, read by OpenCV when it opens a stream
        try:
            cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
        finally:
            cv2.utils.logging.setLogLevel(level)
            if ffmpeg is None:
                os.environ.pop(FFMPEG_LOG, None)
            else:
                os.environ[FFMPEG_LOG] = ffmpeg
        if not cap.isOpened():
            what = "video file" if self.is_file else "camera" if self.spec.isdigit() else "stream"
            raise FmModelError(f"expected a {what} that OpenCV can open, got one it cannot open", self.spec)
        return cap

    def run(self, clock: Clock, frames: FrameRing, stop: threading.Event) -> None:
        """Producer thread: read frames until the file ends or ``stop``."""
        i, failing_since = 0, math.nan
        try:
            while not stop.is_set():
                if self.is_file and not _wait(clock, self.start + i / float(self.fps or 1.0), stop):
                    break
                ok, image = self._cap.read()
                if not ok:
                    if self.is_file:
                        break
                    self.read_failures += 1  # a camera or stream that stalls: the no-frame alarm tells
                    failing_since = clock.now() if math.isnan(failing_since) else failing_since
                    if clock.now() - failing_since > REOPEN_AFTER:
                        self._cap.release()
                        try:
                            self._cap = self._open()
                        except FmModelError:
                            pass
                        failing_since = math.nan
                    time.sleep(NAP)
                    continue
                failing_since = math.nan
                stamp = self.start + i / float(self.fps or 1.0) if self.is_file else clock.now()
                if self.shape is not None:  # shrink first: the colour swap then touches 64x64 pixels, not a camera's
                    image = cv2.cvtColor(fit_frame(image, self.shape), cv2.COLOR_BGR2RGB)
                frames.push(i, stamp, clock.now(), None if self.shape is None else image)
                i += 1
        finally:
            self._cap.release()
            self.done = True


class CurrentFeed:
    """Turns V2-layout text rows into ring rows: parses, orders, keeps the stream's current rule and
    how far its history is complete. ``origin`` is subtracted from every timestamp."""

    def __init__(self, origin: float, where: str) -> None:
        self.origin, self.where = float(origin), where
        self.last = -math.inf
        self.whole = True
        self.bad_rows = 0
        self.first_error: str | None = None

    def parse(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (stamps, values (n, 3)) of the rows in ``lines``; a bad row is skipped and counted
        (``bad_rows``; ``first_error`` says what was wrong with the first)."""
        stamps, values = [], []
        for n, cells in enumerate(csv.reader(line.rstrip("\r") for line in lines if line.strip())):
            try:
                if len(cells) != 4:
                    raise ValueError(f"expected 4 columns (timestamp, A, B, C), got {len(cells)}")
                t = epoch_seconds(cells[0]) - self.origin
                row = [float(c) for c in cells[1:]]
                if not all(math.isfinite(v) for v in row):
                    raise ValueError(f"expected finite currents, got {cells[1:]}")
                if t < self.last:
                    raise ValueError(f"expected rows in time order, got {cells[0]!r} after a later row")
            except ValueError as exc:
                self.first_error = self.first_error or f"{exc} in row {n + 1} ({','.join(cells)[:60]!r})"
                self.bad_rows += 1
                continue
            self.last = t
            self.whole = self.whole and t == math.floor(t)
            stamps.append(t)
            values.append(row)
        return np.asarray(stamps, np.float64), np.asarray(values, np.float64).reshape(-1, 3)

    def push(self, current: CurrentRing, stamps: np.ndarray, values: np.ndarray, arrival: float) -> None:
        """Push parsed rows; every row stamped before the newest one is complete."""
        if len(stamps):
            current.push(stamps, values, arrival)
        current.rule = RULE_SECONDS if self.whole else RULE_SPAN
        current.bad_rows = self.bad_rows
        if math.isfinite(self.last):
            current.complete_until = float(np.nextafter(self.last, -math.inf))


class CsvCurrentSource:
    """A current CSV in the V2 layout, followed as it grows (``tail -f``).

    The rows already there are the history (its last ``history_bytes`` read at start, arrival
    unknown); rows appended later arrive live. A partial last line waits for its newline.
    """

    def __init__(self, path: str, *, origin: float, history_bytes: int = HISTORY_BYTES) -> None:
        if not os.path.isfile(path):
            raise FmModelError("expected a current CSV file, got nothing there", path)
        self.path = path
        self.feed = CurrentFeed(origin, path)
        with open(path, "rb") as fh:
            head, newline, rest = fh.readline().partition(b"\n")
            cells = next(csv.reader([head.decode("utf-8", errors="replace").strip()]), [])
            if not newline or len(cells) != 4 or _is_time(cells[0]):
                raise FmModelError(f"expected the V2 current layout's header {V2_CURRENT_HEADER!r} (timestamp and "
                                   f"the phases A, B, C) as the first line, got "
                                   f"{head.decode('utf-8', 'replace').strip()[:80]!r}", path)
            body = fh.tell()
            size = fh.seek(0, os.SEEK_END)
            start = max(body, size - history_bytes)  # a long log: only its end can be in the rings
            fh.seek(start)
            data = fh.read(size - start)
        if start > body:
            data = data.partition(b"\n")[2]  # from the first whole line on
        complete, last_newline, _ = data.rpartition(b"\n")  # a partial last line is read once it is complete
        self._pos = size - len(data) + (len(complete) + 1 if last_newline else 0)
        lines = complete.decode("utf-8", errors="replace").split("\n") if last_newline else []
        self._history = self.feed.parse(lines)  # a garbled line is skipped and counted, as later ones are
        if self.feed.bad_rows and not len(self._history[0]):  # but rows that all fail are another layout
            raise FmModelError(f"expected rows in the V2 current layout, got none readable: {self.feed.first_error}",
                               path)
        self.done = False

    def run(self, clock: Clock, current: CurrentRing, stop: threading.Event) -> None:
        """Producer thread: push the history, then every complete line appended, until ``stop``."""
        self.feed.push(current, *self._history, math.nan)
        with open(self.path, "rb") as fh:
            fh.seek(self._pos)
            buffer = b""
            while not stop.is_set():
                chunk = fh.read()
                if not chunk:
                    time.sleep(NAP)
                    continue
                buffer += chunk
                complete, _, buffer = buffer.rpartition(b"\n")
                if complete:
                    lines = complete.decode("utf-8", errors="replace").split("\n")
                    self.feed.push(current, *self.feed.parse(lines), clock.now())
        self.done = True


def _is_time(text: str) -> bool:
    try:
        epoch_seconds(text)
        return True
    except ValueError:
        return False


class MqttCurrentSource:
    """Current rows from an MQTT topic: each message holds one or more V2-layout lines.

    ``broker`` is ``host`` or ``host:port`` (default port 1883). Needs ``paho-mqtt`` (the
    ``online`` extra); connecting is checked at start-up.
    """

    def __init__(self, broker: str, topic: str, *, origin: float) -> None:
        client_mod = import_paho()
        host, port = parse_broker(broker)
        self.topic, self.where = topic, f"mqtt://{host}:{port}/{topic}"
        self.feed = CurrentFeed(origin, self.where)
        self._client = client_mod.Client(client_mod.CallbackAPIVersion.VERSION2)
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise FmModelError(f"expected an MQTT broker, got {exc.strerror or exc}", f"mqtt://{host}:{port}") from None
        self.done = False

    def run(self, clock: Clock, current: CurrentRing, stop: threading.Event) -> None:
        """Producer: subscribe and push every row received (paho's network thread), until ``stop``."""
        def on_message(client: Any, userdata: Any, message: Any) -> None:
            lines = message.payload.decode("utf-8", errors="replace").splitlines()
            self.feed.push(current, *self.feed.parse(lines), clock.now())

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            client.subscribe(self.topic, qos=1)  # again after a reconnect

        self._client.on_message = on_message
        self._client.on_connect = on_connect
        self._client.loop_start()
        try:
            stop.wait()
        finally:
            self._client.loop_stop()
            self._client.disconnect()
            self.done = True


def import_paho() -> Any:
    """Return ``paho.mqtt.client``; FmModelError saying what to install when it is absent."""
    try:
        import paho.mqtt.client as client_mod  # optional: only MQTT users install it (extra "online")
    except ImportError:
        raise FmModelError("expected paho-mqtt for MQTT (pip install 'fmf-toolkit[online]'), got none installed",
                           field="mqtt_broker") from None
    return client_mod


def parse_broker(text: str) -> tuple[str, int]:
    """Return (host, port) of ``host`` or ``host:port``; FmModelError (field ``mqtt_broker``) otherwise."""
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not sep:
        return text, MQTT_PORT
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FmModelError(f"expected an MQTT broker as HOST or HOST:PORT, got {text!r}", field="mqtt_broker")
    return host, int(port)
