"""Where ``fmmodel watch`` puts its alarms: a JSON-lines file, an MQTT topic, snapshot pictures.

Each event is one JSON object: ``type`` ("process" or "health"), ``name`` (the health alarm's;
"process" for the process alarm), ``kind`` ("raise" or "clear"), ``time`` (stream seconds) and
``wall`` (the Unix time it stands for, ISO 8601 UTC), ``alarm`` (number of the alarm), the
decision's ``score`` and ``smoothed`` score, ``frame`` (the anchor frame), on a clear
``peak_score``/``peak_time``, and for a segmentation model's process alarm the predicted mask
of the anchor frame (``mask``: its height, width, abnormal pixels and run-length ``counts`` of
its row-major 0/1 pixels, starting with a run of 0s) and the ``snapshot`` picture's path.

The file is opened for appending and every line is flushed and synced as it is written: a watch
stopped by Ctrl-C, or killed, leaves every event it had reported. The scores file (``--scores``)
gets one line per decision: ``time``, ``frame`` and its ``stamp`` (stream seconds), ``score``,
``latency_ms``, ``age_s``. Snapshots are never replaced:
each name carries the watch's start time and the alarm's number.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import cv2
import numpy as np

from fmdata.store.atomic import atomic_file
from fmmodel.errors import FmModelError
from fmmodel.online.live import import_paho, parse_broker

SNAPSHOT_WIDTH = 320  # snapshot pictures enlarge frames (nearest neighbour, whole times) to at least this width


def wall_time(seconds: float) -> str:
    """ISO 8601 UTC text of a Unix time."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """Return a 0/1 mask (H, W) as {height, width, abnormal_pixels, counts}: the lengths of its runs in
    row-major order, the first a run of 0s (possibly empty)."""
    flat = (np.asarray(mask).reshape(-1) != 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "abnormal_pixels": int(flat.sum()),
            "counts": counts}


def mask_from_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_rle`: the (H, W) uint8 mask."""
    values = np.arange(len(rle["counts"])) % 2
    return np.repeat(values, rle["counts"]).astype(np.uint8).reshape(rle["height"], rle["width"])


class JsonLines:
    """Appends records to a JSON-lines file, each line flushed (and synced when ``sync``: events are
    few and must survive a crash; scores are many). ``field`` names the option the path came from."""

    def __init__(self, path: str, *, sync: bool, field: str) -> None:
        self.path, self.sync = path, sync
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FmModelError("expected the folder of the file to exist, got none", folder, field=field)
        try:
            self._fh = open(path, "a", encoding="utf-8")  # closed by close()
        except OSError as exc:
            raise FmModelError(f"expected a writable file, got {exc.strerror or exc}", path, field=field) from None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self._fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self._fh.flush()
        if self.sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class MqttPublisher:
    """Publishes events as JSON to an MQTT topic (QoS 1) on ``broker`` (``host[:port]``)."""

    def __init__(self, broker: str, topic: str) -> None:
        client_mod = import_paho()
        host, port = parse_broker(broker)
        self.topic = topic
        self._client = client_mod.Client(client_mod.CallbackAPIVersion.VERSION2)
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise FmModelError(f"expected an MQTT broker, got {exc.strerror or exc}", f"mqtt://{host}:{port}") from None
        self._client.loop_start()

    def write(self, event: dict[str, Any]) -> None:
        """Publish one event."""
        self._client.publish(self.topic, json.dumps(event, separators=(",", ":"), default=str), qos=1)

    def close(self) -> None:
        """Deliver what is queued, then disconnect."""
        self._client.loop_stop()  # paho's publish queue is flushed by disconnect below
        self._client.disconnect()


def write_snapshot(folder: str, name: str, image: np.ndarray, mask: np.ndarray | None, caption: str) -> str | None:
    """Write ``folder/name.png``: the anchor frame (RGB, H x W) enlarged, the predicted mask's outline
    in red when given, and ``caption`` in a bar below; return its path (None when the name is taken:
    a snapshot is never replaced)."""
    path = os.path.join(folder, f"{name}.png")
    if os.path.exists(path):
        return None
    h, w = image.shape[:2]
    scale = max(1, -(-SNAPSHOT_WIDTH // w))
    big = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    if mask is not None and mask.any():
        up = cv2.resize(mask.astype(np.uint8), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(big, contours, -1, (0, 0, 255), 2)
    bar = np.zeros((22, big.shape[1], 3), np.uint8)
    cv2.putText(bar, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    with atomic_file(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.concatenate([big, bar])):
            raise FmModelError("expected OpenCV to write a PNG snapshot, got a failure", path)
    return path
