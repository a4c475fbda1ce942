"""Smaller faults of source files and paths (issue 11, item 11), each on a real file.

A v7.3 file that declares frames it never wrote; a sparse matrix; a V2 current log without its
header; timestamps with a UTC offset; a memory:// store with worker processes; ``synth raw/``."""
import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fmcli.fmdata_main import main as fmdata_main
from fmdata import synth
from fmdata.convert import convert
from fmdata.errors import FmDataError
from fmdata.sources import inspect_path
from fmdata.store import open_store
from fmdata.synth import MatWriter

from builders import write_v2
from processes import FMDATA, one_line_error, run


def test_declared_but_unwritten_frames_are_refused_with_a_reason(tmp_path):
    path = tmp_path / "huge.mat"
    n = 5_000_000
    with MatWriter(path, storage="matlab", threads=1) as wr:  # variables declared, no chunk ever written
        wr.create("video", (16, 16, 3, n), "uint8")
        wr.create("label", (16, 16, n), "logical")
        wr.create("current", (3, n), "double")
        wr.create("train_test_index", (1, n), "double")
    r = run([FMDATA, "inspect", path, "--check"])
    assert r.returncode == 1 and "chunks written, got 0" in r.stdout and "Traceback" not in r.stderr, r.stdout
    assert "every variable read back without error" not in r.stdout
    line = one_line_error(run([FMDATA, "convert", path, tmp_path / "s.zarr"]), 1, str(path))
    assert "expected all" in line and "missing: an unfinished file" in line and "()" not in line


def test_sparse_matrix_is_shown_as_one_and_refused_as_data(tmp_path):
    path = synth.write_v1(tmp_path / "rec.mat", frames=40, size=16, seed=1)
    with h5py.File(path, "r+") as f:  # a 5x4 MATLAB sparse double with 3 non-zeros, as MATLAB stores it
        g = f.create_group("extra")
        g.attrs["MATLAB_class"] = np.bytes_("double")
        g.attrs["MATLAB_sparse"] = np.uint64(5)
        g.create_dataset("data", data=np.array([1.0, 2.0, 3.0]))
        g.create_dataset("ir", data=np.array([0, 3, 4], np.uint64))
        g.create_dataset("jc", data=np.array([0, 1, 1, 2, 3], np.uint64))
    report = inspect_path(path)
    extra = next(v for v in report["variables"] if v["name"] == "extra")
    assert (extra["matlab_class"], tuple(extra["shape"]), extra["layout"]) == ("double", (5, 4), "sparse")
    r = CliRunner().invoke(fmdata_main, ["inspect", str(path)])
    assert "extra" in r.output and "5x4" in r.output and "sparse" in r.output and "group" not in r.output


def test_v2_current_log_without_header_is_refused_not_shortened(tmp_path):
    folder = write_v2(tmp_path / "v2", {"a": 40})
    csv_path = folder / "currents" / "a.csv"
    csv_path.write_text("".join(csv_path.read_text().splitlines(keepends=True)[1:]))
    line = one_line_error(run([FMDATA, "convert", folder, tmp_path / "s.zarr"]), 1, str(csv_path))
    assert "expected a header row first" in line and "line 1" in line
    assert any("header" in p for p in inspect_path(folder)["problems"])


def test_timestamps_with_utc_offset_are_parsed_with_it_without_warning(tmp_path):
    plain = write_v2(tmp_path / "plain", {"a": 60})
    zoned = tmp_path / "zoned"
    shutil.copytree(plain, zoned)
    for part in ("currents", "timestamps"):
        p = zoned / part / "a.csv"
        head, *rows = p.read_text().splitlines()
        p.write_text("\n".join([head] + [r.replace(",", "+08:00,", 1) for r in rows]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's deprecation of zoned datetime64 text would fail here
        convert([str(plain)], str(tmp_path / "p.zarr"), workers=1, progress=False)
        convert([str(zoned)], str(tmp_path / "z.zarr"), workers=1, progress=False)
    p, z = open_store(str(tmp_path / "p.zarr")), open_store(str(tmp_path / "z.zarr"))
    assert p.recordings[0].origin == "2023-05-10T21:33:27"
    assert z.recordings[0].origin == "2023-05-10T21:33:27+08:00"  # the recording's own clock
    for name in ("frame_time", "current_time", "frame_current_end"):
        np.testing.assert_array_equal(p[name][:], z[name][:])
    # a file whose lines mix zoned and naive times has no common clock
    t = zoned / "timestamps" / "a.csv"
    lines = t.read_text().splitlines()
    lines[5] = lines[5].replace("+08:00", "")
    t.write_text("\n".join(lines) + "\n")
    with pytest.raises(FmDataError, match="with a UTC offset or none"):
        convert([str(zoned)], str(tmp_path / "m.zarr"), workers=1, progress=False)


def test_zoned_frame_times_with_naive_current_times_say_so_naming_both_files(tmp_path):
    """A timestamps file with UTC offsets beside a current log without them (or the reverse) is
    refused as that, naming both files: not as currents "not covering" the frames, which is what
    comparing UTC instants with wall-clock times made of it."""
    folder = write_v2(tmp_path / "v2", {"a": 60})
    times, currents = folder / "timestamps" / "a.csv", folder / "currents" / "a.csv"
    naive = times.read_text()
    head, *rows = naive.splitlines()
    times.write_text("\n".join([head] + [r.replace(",", "+08:00,", 1) for r in rows]) + "\n")
    line = one_line_error(run([FMDATA, "convert", folder, tmp_path / "s.zarr"]), 1, str(currents), str(times))
    assert "expected current times with a UTC offset, as the frame times in" in line and "(+08:00)" in line
    assert "covering" not in line
    times.write_text(naive)  # the reverse: naive frame times, zoned current times
    head, *rows = currents.read_text().splitlines()
    currents.write_text("\n".join([head] + [r.replace(",", "-05:00,", 1) for r in rows]) + "\n")
    with pytest.raises(FmDataError, match=r"expected current times without a UTC offset, as the frame times in "
                                          r".*timestamps/a.csv are, got times with one \(-05:00\)"):
        convert([str(folder)], str(tmp_path / "r.zarr"), workers=1, progress=False)


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_file_and_line(tmp_path):
    """A Latin-1 current log (a unit "µA" saved by a spreadsheet) is one line in convert and a problem
    of inspect, naming the file, the byte and its line: never "unexpected UnicodeDecodeError"."""
    folder = write_v2(tmp_path / "v2", {"a": 40})
    csv_path = folder / "currents" / "a.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n") + " \u00b5A\n"
    csv_path.write_bytes("".join(lines).encode("latin-1"))
    want = "expected UTF-8 text, got the byte 0xb5 at line 4"
    r = run([FMDATA, "inspect", folder])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert f"problem: currents/a.csv: {want}" in r.stdout, r.stdout
    one_line_error(run([FMDATA, "convert", folder, tmp_path / "s.zarr"]), 1, str(csv_path), want)


def test_memory_store_converts_in_this_process(tmp_path):
    src = synth.write_v1(tmp_path / "rec.mat", frames=60, size=16, seed=1)
    report = convert([str(src)], "memory://issue11/s.zarr", progress=False)  # no --workers: one, here
    assert report.workers == 1 and open_store("memory://issue11/s.zarr").attrs["fmf_store"]["complete"]
    with pytest.raises(FmDataError, match="lives in this process") as err:
        convert([str(src)], "memory://issue11/t.zarr", workers=2, progress=False)
    assert err.value.field == "workers"


def test_synth_into_a_folder_path_with_one_recording(tmp_path):
    out = tmp_path / "raw"
    r = CliRunner().invoke(fmdata_main, ["synth", f"{out}/", "--frames", "30", "--size", "16", "--json"])
    assert r.exit_code == 0, r.output
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["batch_01.mat"]
    assert json.loads(r.output)["files"] == [str(out / "batch_01.mat")]
    r = CliRunner().invoke(fmdata_main, ["synth", str(tmp_path / "one.mat"), "--frames", "30", "--size", "16"])
    assert r.exit_code == 0 and (tmp_path / "one.mat").is_file(), r.output
