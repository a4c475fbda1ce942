"""The text files of a V2 folder: split JSON lists, frame timestamps and 2 Hz current logs.

Parsed strictly, as UTF-8 (one line naming the file, the line and the problem for anything off),
and cached per process by (path, size, mtime): conversion workers re-read them by path, once each.
A CSV file's first line must be its header (a first line that holds data is refused, rather than
lost).
Timestamps are naive wall-clock times (``2023-05-10 21:33:27``) or carry a UTC offset on every
line (``2023-05-10 21:33:27+08:00``, ``...Z``): those are parsed with their offset, as UTC
instants, and the recording's origin keeps the offset of its first time.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Iterator

import numpy as np

from fmdata.errors import FmDataError
from fmdata.sources.layouts import V2_CURRENT_HEADER, V2_TIMESTAMP_HEADER
from fmdata.store import schema


def fingerprint(path: str) -> tuple[str, int, int]:
    """Return (path, size, mtime_ns): what tells a file apart from a changed one."""
    st = os.stat(path)
    return (path, int(st.st_size), int(st.st_mtime_ns))


def read_split_json(path: str) -> dict[str, list[int]]:
    return _split_json_cached(fingerprint(path))


@functools.lru_cache(maxsize=4)
def _split_json_cached(key: tuple[str, int, int]) -> dict[str, list[int]]:
    path = key[0]
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError:
        raise FmDataError(not_utf8(path), path) from None
    except json.JSONDecodeError as exc:
        raise FmDataError(f"expected JSON, got unparsable text ({exc})", path) from None
    if not isinstance(data, dict):
        raise FmDataError(f"expected a JSON object {{\"<name>.mat\": [frame indices]}}, got {type(data).__name__}",
                          path)
    for k, v in data.items():
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise FmDataError(f"expected {k!r} to map to a list of integer frame indices, got {v!r:.60}", path)
    return data


def split_codes(train: dict[str, list[int]], test: dict[str, list[int]], key: str, n: int,
              train_path: str, test_path: str) -> np.ndarray:
    """Return the int8 split codes of one V2 recording from the two JSON index lists."""
    split = np.full(n, schema.SPLIT_NONE, dtype=np.int8)
    for code, d, path in ((schema.SPLIT_TRAIN, train, train_path), (schema.SPLIT_TEST, test, test_path)):
        idx = np.asarray(d.get(key, []), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise FmDataError(f"expected frame indices of {key!r} in 0..{n - 1}, got {bad}", path)
        if np.unique(idx).size != idx.size:
            raise FmDataError(f"expected distinct frame indices for {key!r}, got duplicates", path)
        taken = split[idx] != schema.SPLIT_NONE
        if taken.any():
            raise FmDataError(f"expected {key!r} frames in one split only, got frame {idx[taken][0]} in both "
                              f"train.json and test.json", path)
        split[idx] = code
    return split


def _rows(path: str, min_cols: int, example: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells) of the data rows of a CSV file whose first line is a header.

    A first line that reads as data (a timestamp in its first cell) is refused: taking it for the
    header would silently drop the first row. ``example`` is the header line the message suggests.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise FmDataError("expected a header row and data rows, got an empty file", path)
            if header and _is_timestamp(header[0]):
                raise FmDataError(f"expected a header row first (like {example!r}), got data at line 1 "
                                  f"({','.join(header)[:60]!r}); add the header line, or the first row is lost", path)
            for row in reader:
                if not row:
                    continue
                if len(row) < min_cols:
                    raise FmDataError(f"expected at least {min_cols} columns, got {len(row)} at line {reader.line_num}",
                                      path)
                yield reader.line_num, row
    except UnicodeDecodeError:
        raise FmDataError(not_utf8(path), path) from None
    except csv.Error as exc:
        raise FmDataError(f"expected CSV text, got unparsable content ({exc})", path) from None


def not_utf8(path: str) -> str:
    """Return "expected X, got Y" for a text file that is not UTF-8: its first such byte and line."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return (f"expected UTF-8 text, got the byte 0x{data[exc.start]:02x} at line {line} (a file in another "
                "encoding, such as Latin-1: save it as UTF-8)")
    return "expected UTF-8 text, got bytes that are not"  # changed since it failed


# A UTC offset after a time of day: "2023-05-10 21:33:27+08:00", "...T21:33:27-0500", "...Z".
_ZONE = re.compile(r"(?<=\d:\d\d)(?:(?::\d\d)(?:\.\d+)?)?(Z|[+-]\d\d:?\d\d)$")


def split_zone(text: str) -> tuple[str, int | None]:
    """Return (the timestamp without its UTC offset, the offset in minutes or None when it has none)."""
    t = text.strip()
    found = _ZONE.search(t)
    if found is None:
        return t, None
    zone = found.group(1)
    naive = t[:found.start(1)]
    if zone == "Z":
        return naive, 0
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return naive, minutes if zone[0] == "+" else -minutes


def parse_time(text: str) -> np.datetime64:
    """Return one timestamp as datetime64[us]: naive as written, or with a UTC offset as the UTC
    instant (no numpy warning: the offset is applied here). ValueError when it is none."""
    naive, zone = split_zone(text)
    t = np.datetime64(naive, "us")
    return t if zone is None else t - np.timedelta64(zone, "m")


def _is_timestamp(text: str) -> bool:
    try:
        return not np.isnat(parse_time(text))
    except ValueError:
        return False


def format_zone(minutes: int) -> str:
    """Return a UTC offset in ISO 8601 form, e.g. +08:00."""
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _parse_times(texts: list[str], lines: list[int], path: str) -> tuple[np.ndarray, int | None]:
    """Return (timestamps datetime64[us], UTC offset in minutes of the first one or None).

    Timestamps with a UTC offset are parsed with it, as UTC instants; the file must then give an
    offset on every line (a mix of zoned and naive times has no common clock).
    """
    parts = [split_zone(t) for t in texts]
    zones = [z for _, z in parts]
    zoned = [z is not None for z in zones]
    if any(zoned) and not all(zoned):
        i = zoned.index(not zoned[0])
        raise FmDataError(f"expected every timestamp with a UTC offset or none, got {texts[i].strip()!r} at line "
                          f"{lines[i]} after {texts[0].strip()!r}", path)
    try:
        ts = np.array([t for t, _ in parts], dtype="datetime64[us]")
    except ValueError:
        for t, line in zip(texts, lines):
            try:
                parse_time(t)
            except ValueError:
                raise FmDataError(f"expected a timestamp like 2023-05-10 21:33:27, got {t!r} at line {line}",
                                  path) from None
        raise
    if all(zoned) and zones:
        ts = ts - np.asarray(zones, dtype="timedelta64[m]")
    if np.isnat(ts).any():
        line = lines[int(np.argmax(np.isnat(ts)))]
        raise FmDataError(f"expected a timestamp, got an empty value at line {line}", path)
    back = np.flatnonzero(np.diff(ts) < np.timedelta64(0, "us"))
    if back.size:
        i = int(back[0]) + 1
        raise FmDataError(f"expected timestamps in order, got {iso(ts[i])} after {iso(ts[i - 1])} at line {lines[i]}",
                          path)
    return ts, (zones[0] if zones else None)


def read_timestamps(path: str) -> np.ndarray:
    """Return the frame timestamps (datetime64[us]) of a V2 timestamps/<name>.csv.

    Timestamps with a UTC offset (``2023-05-10 21:33:27+08:00``) come back as UTC instants;
    :func:`timestamps_zone` gives the offset.
    """
    return _timestamps_cached(fingerprint(path))[0]


def timestamps_zone(path: str) -> int | None:
    """Return the UTC offset (minutes) of a timestamps CSV's times, or None when they have none."""
    return _timestamps_cached(fingerprint(path))[1]


@functools.lru_cache(maxsize=4)
def _timestamps_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, int | None]:
    path = key[0]
    texts, lines = [], []
    for line, row in _rows(path, 1, V2_TIMESTAMP_HEADER):
        texts.append(row[0])
        lines.append(line)
    if not texts:
        raise FmDataError("expected one timestamp row per frame, got no rows", path)
    return _parse_times(texts, lines, path)


def read_currents(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (timestamps datetime64[us], currents (M, 3) float64) of a V2 currents/<name>.csv
    (times with a UTC offset as UTC instants: :func:`currents_zone` gives the offset)."""
    ts, cur, _ = _currents_cached(fingerprint(path))
    return ts, cur


def currents_zone(path: str) -> int | None:
    """Return the UTC offset (minutes) of a currents CSV's times, or None when they have none."""
    return _currents_cached(fingerprint(path))[2]


@functools.lru_cache(maxsize=4)
def _currents_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray, int | None]:
    path = key[0]
    texts, lines, values = [], [], []
    for line, row in _rows(path, 4, V2_CURRENT_HEADER):
        if len(row) != 4:
            raise FmDataError(f"expected 4 columns (timestamp, A, B, C), got {len(row)} at line {line}", path)
        texts.append(row[0])
        lines.append(line)
        try:
            values.append((float(row[1]), float(row[2]), float(row[3])))
        except ValueError:
            raise FmDataError(f"expected three numbers (A, B, C), got {row[1:]} at line {line}", path) from None
    if not texts:
        raise FmDataError("expected current rows, got none", path)
    cur = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(cur).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise FmDataError(f"expected finite current values, got {cur[i].tolist()} at line {lines[i]}", path)
    ts, zone = _parse_times(texts, lines, path)
    return ts, cur, zone


def iso(t: np.datetime64, zone: int | None = None) -> str:
    """ISO 8601 text of a timestamp, without trailing zero fractions; with ``zone`` (a UTC offset
    in minutes) the UTC instant ``t`` is written as that zone's wall-clock time and offset."""
    if zone is None:
        return str(np.datetime_as_string(t, unit="auto"))
    return str(np.datetime_as_string(t + np.timedelta64(zone, "m"), unit="auto")) + format_zone(zone)


def seconds_since(ts: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return (ts - origin).astype("timedelta64[us]").astype(np.int64) / 1e6

