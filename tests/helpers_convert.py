"""Small MAT files and V2 folders for the conversion tests, written the way MATLAB writes them.

``write_v1`` writes MATLAB-order arrays through :mod:`fmdata.matfile` (512-byte MATLAB header,
``MATLAB_class`` attributes, reversed dimensions, ``logical`` as uint8, deflate-3 chunks near
64 KiB, small variables compact). ``read_v1_independently`` reads a V1 file back with plain h5py
and the documented transposes only, so tests do not trust the converter's own reader.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmdata import matfile, schema


def v1_arrays(n: int, h: int = 6, w: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random MATLAB-order V1 variables: video (H, W, 3, N), label (H, W, N), current (3, N), split (1, N)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w, n), dtype=bool)
    label[1:3, 2:5, n // 3:n // 2] = True
    return {
        "video": rng.integers(0, 256, (h, w, 3, n), dtype=np.uint8),
        "label": label,
        "current": rng.normal(9000.0, 300.0, (3, n)),
        "train_test_index": (np.arange(n) >= (2 * n) // 3).astype(np.float64)[None, :],
    }


def write_v1(path: str | os.PathLike[str], arrays: dict[str, Any], storage: str = "matlab",
             classes: dict[str, str] | None = None) -> Path:
    """Write MATLAB-order ``arrays`` as a v7.3 MAT file (``classes`` overrides MATLAB classes)."""
    classes = classes or {}
    with matfile.MatWriter(path, storage=storage, threads=1) as wr:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1)
            wr.write(name, arr, classes.get(name))
    return Path(path)


def read_v1_independently(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a V1 file with plain h5py into store orientation (the documented transposes)."""
    with h5py.File(path, "r") as f:
        return {
            schema.VIDEO: f["video"][()].transpose(0, 3, 2, 1),  # (N, 3, W, H) -> (N, H, W, 3)
            schema.MASK: f["label"][()].transpose(0, 2, 1),  # (N, W, H) -> (N, H, W)
            schema.CURRENT: f["current"][()].astype(np.float64),  # MATLAB (3, N) is h5py (N, 3)
            schema.SPLIT: f["train_test_index"][()].reshape(-1).astype(np.int8),
        }


def read_v2_independently(folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Read one V2 recording with h5py, the csv module and json: arrays in store orientation."""
    folder = Path(folder)
    with h5py.File(folder / "videos" / f"{name}.mat", "r") as f:
        video = f["data"][()].transpose(0, 3, 2, 1)
        mask = f["label"][()].transpose(0, 2, 1)
    with open(folder / "currents" / f"{name}.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    cur_ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
    current = np.array([[float(x) for x in r[1:4]] for r in rows])
    with open(folder / "timestamps" / f"{name}.csv", newline="") as fh:
        frame_ts = np.array([r[0] for r in list(csv.reader(fh))[1:]], dtype="datetime64[s]")
    split = np.full(len(video), schema.SPLIT_NONE, np.int8)
    split[json.loads((folder / "train.json").read_text()).get(f"{name}.mat", [])] = schema.SPLIT_TRAIN
    split[json.loads((folder / "test.json").read_text()).get(f"{name}.mat", [])] = schema.SPLIT_TEST
    return {"video": video, "mask": mask, "current": current, "current_ts": cur_ts, "frame_ts": frame_ts,
            "split": split}


def write_v2(folder: str | os.PathLike[str], recordings: dict[str, int], h: int = 6, w: int = 10,
             seed: int = 0) -> Path:
    """Write a small V2 folder: per recording ``name: n_frames`` at 5 fps with 2 Hz current."""
    folder = Path(folder)
    for sub in ("videos", "currents", "timestamps"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    train, test = {}, {}
    origin = np.datetime64("2023-05-10T21:33:27")
    for k, (name, n) in enumerate(recordings.items()):
        a = v1_arrays(n, h, w, seed + k)
        write_v1(folder / "videos" / f"{name}.mat", {"data": a["video"], "label": a["label"]})
        secs = np.arange(n) // 5  # 5 frames per second
        stamps = [str(origin + np.timedelta64(int(s), "s")).replace("T", " ") for s in secs]
        with open(folder / "timestamps" / f"{name}.csv", "w", newline="") as fh:
            fh.write("timestamp,frame\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))
        rng = np.random.default_rng(seed + 100 + k)
        with open(folder / "currents" / f"{name}.csv", "w", newline="") as fh:
            fh.write("timestamp,A,B,C\n")
            for s in range(int(secs[-1]) + 1):
                for _ in range(2):
                    t = str(origin + np.timedelta64(s, "s")).replace("T", " ")
                    fh.write(f"{t},{rng.normal(9000, 300):.1f},{rng.normal(9000, 300):.1f},{rng.normal(9000, 300):.1f}\n")
        cut = (2 * n) // 3
        train[f"{name}.mat"] = list(range(0, cut - 2))
        test[f"{name}.mat"] = list(range(cut, n))
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "test.json").write_text(json.dumps(test))
    return folder


def leftovers(out: str | os.PathLike[str]) -> list[str]:
    """Names next to ``out`` that a failed conversion might have left: out itself, partial siblings."""
    out = Path(out)
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))
