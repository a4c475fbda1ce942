"""The text files of a V2 folder: split JSON lists, frame timestamps and 2 Hz current logs.

Parsed strictly (one line naming the file, the line and the problem for anything off) and cached
per process by (path, size, mtime): conversion workers re-read them by path, once each.
"""
from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Iterator

import numpy as np

from fmdata.errors import FmDataError
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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
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


def _rows(path: str, min_cols: int) -> Iterator[tuple[int, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise FmDataError("expected a header row and data rows, got an empty file", path)
            for row in reader:
                if not row:
                    continue
                if len(row) < min_cols:
                    raise FmDataError(f"expected at least {min_cols} columns, got {len(row)} at line {reader.line_num}",
                                      path)
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FmDataError(f"expected CSV text, got unparsable content ({exc})", path) from None


def _parse_times(texts: list[str], lines: list[int], path: str) -> np.ndarray:
    try:
        ts = np.array([t.strip() for t in texts], dtype="datetime64[us]")
    except ValueError:
        for t, line in zip(texts, lines):
            try:
                np.datetime64(t.strip(), "us")
            except ValueError:
                raise FmDataError(f"expected a timestamp like 2023-05-10 21:33:27, got {t!r} at line {line}",
                                  path) from None
        raise
    if np.isnat(ts).any():
        line = lines[int(np.argmax(np.isnat(ts)))]
        raise FmDataError(f"expected a timestamp, got an empty value at line {line}", path)
    back = np.flatnonzero(np.diff(ts) < np.timedelta64(0, "us"))
    if back.size:
        i = int(back[0]) + 1
        raise FmDataError(f"expected timestamps in order, got {iso(ts[i])} after {iso(ts[i - 1])} at line {lines[i]}",
                          path)
    return ts


def read_timestamps(path: str) -> np.ndarray:
    """Return the frame timestamps (datetime64[us]) of a V2 timestamps/<name>.csv."""
    return _timestamps_cached(fingerprint(path))


@functools.lru_cache(maxsize=4)
def _timestamps_cached(key: tuple[str, int, int]) -> np.ndarray:
    path = key[0]
    texts, lines = [], []
    for line, row in _rows(path, 1):
        texts.append(row[0])
        lines.append(line)
    if not texts:
        raise FmDataError("expected one timestamp row per frame, got no rows", path)
    return _parse_times(texts, lines, path)


def read_currents(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (timestamps datetime64[us], currents (M, 3) float64) of a V2 currents/<name>.csv."""
    return _currents_cached(fingerprint(path))


@functools.lru_cache(maxsize=4)
def _currents_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    path = key[0]
    texts, lines, values = [], [], []
    for line, row in _rows(path, 4):
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
    return _parse_times(texts, lines, path), cur


def iso(t: np.datetime64) -> str:
    """ISO 8601 text of a timestamp, without trailing zero fractions."""
    return str(np.datetime_as_string(t, unit="auto"))


def seconds_since(ts: np.ndarray, origin: np.datetime64) -> np.ndarray:
    return (ts - origin).astype("timedelta64[us]").astype(np.int64) / 1e6

