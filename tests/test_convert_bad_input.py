"""Bad input to ``fmdata convert``: one clear line, exit code 1, no traceback, nothing left that looks valid."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from fmcli.fmdata_main import main

from builders import leftovers, v1_arrays, write_v1, write_v2

N, H, W = 60, 5, 7
SCIPY_DATA = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"
SCIPY_CORRUPT = ["bad_miuint32.mat", "bad_miutf8_array_name.mat", "broken_utf8.mat", "corrupted_zlib_checksum.mat",
                 "corrupted_zlib_data.mat"]


def run_convert(sources: list[str], out: Path, *extra: str):
    result = CliRunner().invoke(main, ["convert", *sources, str(out), "--no-progress", "--workers", "1", *extra])
    return result


def assert_one_clear_line(result, *fragments: str, exit_code: int = 1) -> str:
    """One line, no traceback, the exit code of a data problem (1) or a usage error (2)."""
    text = result.output.strip()
    if os.environ.get("FMF_SHOW_MESSAGES"):
        print("\nMESSAGE:", text)
    assert result.exit_code == exit_code, text
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for f in fragments:
        assert f in text, text
    return text


def _v1(tmp: Path, classes: dict | None = None, **change) -> list[str]:
    arrays = v1_arrays(N, H, W, seed=5)
    for k, v in change.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v(arrays[k]) if callable(v) else v
    return [str(write_v1(tmp / "rec.mat", arrays, classes=classes))]


def _with_value(name: str, index: tuple, value) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[index] = value
        return a
    return change


V1_CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "missing variable": (lambda t: _v1(t, label=None), ("rec.mat", "expected a variable 'label'")),
    "video frames disagree with mask": (lambda t: _v1(t, label=lambda a: a[:, :, :-1]),
                                        ("rec.mat", "expected 'label' to have 60 frames like 'video', got 59")),
    "current samples disagree": (lambda t: _v1(t, current=lambda a: np.concatenate([a, a[:, :1]], axis=1)),
                                 ("rec.mat", "expected 'current' to have 60 samples", "got 61")),
    "split length disagrees": (lambda t: _v1(t, train_test_index=lambda a: a[:, :-2]),
                               ("rec.mat", "'train_test_index'", "(1, 60)")),
    "video of class double": (lambda t: _v1(t, video=lambda a: a.astype(np.float64)),
                              ("rec.mat", "expected 'video' of MATLAB class uint8, got double")),
    "current of class int16": (lambda t: _v1(t, current=lambda a: a.astype(np.int16)),
                               ("rec.mat", "'current' of MATLAB class double or single, got int16")),
    "video without a channel axis": (lambda t: _v1(t, video=lambda a: a[:, :, 0, :]),
                                     ("rec.mat", "expected 'video' of MATLAB shape (H, W, 3, N), got (5, 7, 60)")),
    "current with four phases": (lambda t: _v1(t, current=lambda a: np.concatenate([a, a[:1]])),
                                 ("rec.mat", "'current' of MATLAB shape (3, N), got (4, 60)")),
    "mask value 2": (lambda t: _v1(t, {"label": "uint8"},
                                   label=lambda a: _with_value("label", (2, 3, 41), 2)(a.astype(np.uint8))),
                     ("rec.mat", "expected 'label' values 0 or 1, got 2 at frame 41")),
    "split value 2": (lambda t: _v1(t, train_test_index=_with_value("s", (0, 33), 2.0)),
                      ("rec.mat", "'train_test_index' values 0 or 1, got 2.0 at frame 33")),
    "NaN current": (lambda t: _v1(t, current=_with_value("c", (1, 17), np.nan)),
                    ("rec.mat", "expected finite values in 'current'", "at sample 17")),
    "Inf current": (lambda t: _v1(t, current=_with_value("c", (2, 59), np.inf)),
                    ("rec.mat", "expected finite values in 'current'", "inf", "at sample 59")),
}


@pytest.mark.parametrize("case", sorted(V1_CASES))
def test_bad_v1_files(tmp_path, case):
    build, fragments = V1_CASES[case]
    sources = build(tmp_path)
    out = tmp_path / "out.zarr"
    assert_one_clear_line(run_convert(sources, out), *fragments)
    assert leftovers(out) == []


def test_a_bad_value_found_by_a_worker_process_stops_everything_and_cleans_up(tmp_path):
    arrays = v1_arrays(400, H, W, seed=6)
    arrays["label"] = arrays["label"].astype(np.uint8)
    arrays["label"][0, 0, 37] = 3  # in the first unit, which a spawned child converts
    src = write_v1(tmp_path / "late.mat", arrays, classes={"label": "uint8"})
    out = tmp_path / "out.zarr"
    result = CliRunner().invoke(main, ["convert", str(src), str(out), "--no-progress", "--workers", "2",
                                       "--shard-frames", "16"])
    assert_one_clear_line(result, "late.mat", "got 3 at frame 37")
    assert leftovers(out) == []


def _mat(tmp: Path) -> Path:
    """A valid V1 file of 2400 frames: video chunked and deflated, most of the file video chunks."""
    return write_v1(tmp / "rec.mat", v1_arrays(2400, H, W, seed=8))


def _truncate(tmp: Path) -> list[str]:
    p = _mat(tmp)
    p.write_bytes(p.read_bytes()[:p.stat().st_size * 6 // 10])
    return [str(p)]


def _garble(where: int | float, length: int) -> Callable[[Path], list[str]]:
    """Flip ``length`` bytes at byte ``where`` (an int) or at that fraction of the file (a float)."""
    def build(tmp: Path) -> list[str]:
        p = _mat(tmp)
        data = bytearray(p.read_bytes())
        at = where if isinstance(where, int) else int(len(data) * where)
        data[at:at + length] = bytes((b ^ 0xA5) for b in data[at:at + length])
        p.write_bytes(bytes(data))
        return [str(p)]
    return build


def _text(tmp: Path) -> list[str]:
    p = tmp / "notes.mat"
    p.write_text("these are my notes, not a MAT file\n")
    return [str(p)]


FILE_CASES = {
    "not a MAT file": (_text, ("notes.mat", "expected a MATLAB MAT file")),
    "truncated HDF5": (_truncate, ("rec.mat",)),
    "corrupt HDF5 signature": (_garble(512, 64), ("rec.mat", "expected an HDF5 file after the 512-byte MATLAB v7.3 "
                                                           "header, got a corrupt or truncated one")),
    "corrupt HDF5 superblock": (_garble(520, 80), ("rec.mat", "corrupt")),
    "corrupt chunk data": (_garble(0.5, 2000), ("rec.mat", "expected readable data in 'video' frames")),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_files_that_are_not_readable_mat_files(tmp_path, case):
    build, fragments = FILE_CASES[case]
    out = tmp_path / "out.zarr"
    assert_one_clear_line(run_convert(build(tmp_path), out), *fragments)
    assert leftovers(out) == []


@pytest.mark.parametrize("name", SCIPY_CORRUPT)
def test_corrupt_old_format_mat_files_from_scipy(tmp_path, name):
    src = tmp_path / name
    shutil.copy(SCIPY_DATA / name, src)
    out = tmp_path / "out.zarr"
    assert_one_clear_line(run_convert([str(src)], out), name)
    assert leftovers(out) == []


def _v2(tmp: Path, change: Callable[[Path], None]) -> list[str]:
    folder = write_v2(tmp / "v2", {"a": 30, "b": 20}, h=H, w=W)
    change(folder)
    return [str(folder)]


def _edit_line(rel: str, line: int, text: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        p = folder / rel
        lines = p.read_text().splitlines()
        lines[line] = text
        p.write_text("\n".join(lines) + "\n")
    return change


def _swap_lines(rel: str, i: int, j: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        p = folder / rel
        lines = p.read_text().splitlines()
        lines[i], lines[j] = lines[j], lines[i]
        p.write_text("\n".join(lines) + "\n")
    return change


def _drop_last_lines(rel: str, k: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        p = folder / rel
        p.write_text("\n".join(p.read_text().splitlines()[:-k]) + "\n")
    return change


V2_CASES = {
    "missing currents file": (lambda f: (f / "currents" / "b.csv").unlink(), ("currents/b.csv", "got none")),
    "extra timestamps file": (lambda f: (f / "timestamps" / "c.csv").write_text("timestamp\n"),
                              ("timestamps/c.csv", "extra file")),
    "extra file among videos": (lambda f: (f / "videos" / "readme.txt").write_text("hi"),
                                ("videos/readme.txt", "extra file")),
    "missing test.json": (lambda f: (f / "test.json").unlink(), ("expected test.json",)),
    "unparsable current number": (_edit_line("currents/a.csv", 3, "2023-05-10 21:33:28,9000.0,abc,9000.0"),
                                  ("currents/a.csv", "expected three numbers", "line 4")),
    "unparsable timestamp": (_edit_line("timestamps/a.csv", 5, "yesterday,4"),
                             ("timestamps/a.csv", "expected a timestamp", "'yesterday'", "line 6")),
    "NaN in current CSV": (_edit_line("currents/b.csv", 2, "2023-05-10 21:33:27,nan,9000.0,9000.0"),
                           ("currents/b.csv", "expected finite current values", "line 3")),
    "unparsable JSON": (lambda f: (f / "train.json").write_text('{"a.mat": [0, 1,'), ("train.json", "expected JSON")),
    "JSON of the wrong shape": (lambda f: (f / "test.json").write_text('{"a.mat": "all"}'),
                                ("test.json", "list of integer frame indices")),
    "JSON index out of range": (lambda f: (f / "test.json").write_text('{"a.mat": [29, 30], "b.mat": [1]}'),
                                ("test.json", "in 0..29, got 30")),
    "JSON key for no video": (lambda f: (f / "train.json").write_text('{"a.mat": [0], "b.mat": [0], "z.mat": [0]}'),
                              ("train.json", "extra key 'z.mat'")),
    "frame timestamps out of order": (_swap_lines("timestamps/a.csv", 5, 12),
                                      ("timestamps/a.csv", "expected timestamps in order, got 2023-05-10T21:33:28 "
                                                           "after 2023-05-10T21:33:29 at line 7")),
    "current timestamps out of order": (_swap_lines("currents/a.csv", 1, 6),
                                        ("currents/a.csv", "expected timestamps in order")),
    "fewer timestamps than frames": (_drop_last_lines("timestamps/b.csv", 3),
                                     ("timestamps/b.csv", "one timestamp row per frame (20), got 17")),
    "current not covering the frames": (_drop_last_lines("currents/a.csv", 2),
                                        ("currents/a.csv", "expected current rows covering")),
}


@pytest.mark.parametrize("case", sorted(V2_CASES))
def test_bad_v2_folders(tmp_path, case):
    change, fragments = V2_CASES[case]
    sources = _v2(tmp_path, change)
    out = tmp_path / "out.zarr"
    assert_one_clear_line(run_convert(sources, out), *fragments)
    assert leftovers(out) == []


def test_output_paths_that_exist_or_cannot_be_written(tmp_path):
    src = _v1(tmp_path)
    existing = tmp_path / "taken.zarr"
    existing.write_text("someone's file")
    assert_one_clear_line(run_convert(src, existing), "taken.zarr", "got one that exists (--overwrite replaces it)")
    assert existing.read_text() == "someone's file"
    assert_one_clear_line(run_convert(src, existing, "--overwrite"), "not an FMF store", "nothing was replaced")
    assert existing.read_text() == "someone's file"
    assert_one_clear_line(run_convert(src, tmp_path / "no" / "such" / "out.zarr"), "expected an existing parent folder")
    assert_one_clear_line(run_convert(src, existing / "out.zarr"), "expected an existing parent folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.mat", "taken.zarr"]


def test_bad_options_and_missing_sources(tmp_path):
    src = _v1(tmp_path)
    assert_one_clear_line(run_convert(src, tmp_path / "a.zarr", "--chunk-frames", "4", "--shard-frames", "6"),
                          "--shard-frames", "multiple of the frames per chunk (4), got 6", exit_code=2)
    assert_one_clear_line(run_convert([str(tmp_path / "gone.mat")], tmp_path / "b.zarr"), "gone.mat", "nothing there")
    assert_one_clear_line(run_convert(src, tmp_path / "c.zarr", "--fps", "0"), "--fps", "frame rate in 0.1..1000",
                          exit_code=2)
    again = [src[0], os.path.join(os.path.dirname(src[0]), ".", os.path.basename(src[0]))]
    assert_one_clear_line(run_convert(again, tmp_path / "d.zarr"), "rec.mat", "expected each source once")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.mat"]


def test_the_console_script_prints_one_line_without_traceback(tmp_path):
    src = _text(tmp_path)
    exe = os.path.join(os.path.dirname(sys.executable), "fmdata")
    res = subprocess.run([exe, "convert", *src, str(tmp_path / "o.zarr")], capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1 and "notes.mat" in res.stderr
    assert json.dumps(leftovers(tmp_path / "o.zarr")) == "[]"
