"""`fmdata inspect` and `fmdata synth` on the command line: reports, real MATLAB files, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from fmcli.fmdata_main import main
from fmdata import synth
from fmdata.compute.memory import format_bytes

SCIPY_DATA = Path(scipy.io.__file__).parent / "matlab" / "tests" / "data"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory):
    return synth.write_v1(tmp_path_factory.mktemp("v1") / "rec.mat", frames=260, size=(24, 32), seed=1)


@pytest.fixture(scope="module")
def v2_folder(tmp_path_factory):
    return synth.write_v2(tmp_path_factory.mktemp("v2") / "pixel-level", recordings=2, frames=240,
                                size=16, seed=2)


# ---- MAT files ----------------------------------------------------------------------------------
def test_inspect_v1_file_text_and_json_agree_with_h5py(v1_file):
    text = run("inspect", v1_file)
    assert text.exit_code == 0, text.output
    assert "MATLAB v7.3 (HDF5)" in text.output and "v1 layout" in text.output
    assert "video             uint8    24x32x3x260" in text.output
    result = run("inspect", v1_file, "--json")
    report = json.loads(result.output)
    assert report["format"] == "7.3" and report["layout"] == "v1" and report["frames"] == 260
    by_name = {v["name"]: v for v in report["variables"]}
    with h5py.File(v1_file, "r") as f:
        for name, ds in f.items():
            v = by_name[name]
            assert tuple(v["shape"]) == tuple(reversed(ds.shape))
            assert v["matlab_class"] == ds.attrs["MATLAB_class"].decode()
            assert (tuple(v["chunks"]) if v["chunks"] else None) == (tuple(reversed(ds.chunks)) if ds.chunks else None)
            assert v["stored_bytes"] == ds.id.get_storage_size()
            assert ("deflate(3)" in v["filters"]) == (ds.compression == "gzip")
    assert by_name["label"]["matlab_class"] == "logical" and by_name["video"]["layout"] == "chunked"


@pytest.mark.parametrize("name, fmt, variable, cls", [
    ("testhdf5_7.4_GLNX86.mat", "7.3", "testdouble", "double"),
    ("teststruct_7.4_GLNX86.mat", "5", "teststruct", "struct"),
    ("testcell_7.1_GLNX86.mat", "5", "testcell", "cell"),
    ("testsparse_6.5.1_GLNX86.mat", "5", "testsparse", "sparse"),
    ("teststring_4.2c_SOL2.mat", "4", "teststring", "char"),
    ("testbool_8_WIN64.mat", "5", "testbools", "logical"),
])
def test_inspect_reads_files_that_matlab_wrote(name, fmt, variable, cls):
    path = SCIPY_DATA / name
    if not path.exists():
        pytest.skip(f"scipy's test data lacks {name}")
    result = run("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == fmt
    v = {v["name"]: v for v in report["variables"]}[variable]
    assert v["matlab_class"] == cls
    if fmt != "7.3":
        assert [tuple(x["shape"]) for x in report["variables"]] == [tuple(s) for _, s, _ in scipy.io.whosmat(path)]
    assert run("inspect", path).exit_code == 0


def test_inspect_check_reads_every_chunk_and_finds_corruption(tmp_path, v1_file):
    ok = run("inspect", v1_file, "--check")
    assert ok.exit_code == 0 and "read back without error" in ok.output
    bad = tmp_path / "bad.mat"
    data = bytearray(v1_file.read_bytes())
    with h5py.File(v1_file, "r") as f:  # overwrite the middle of the first stored video chunk
        info = f["video"].id.get_chunk_info(0)
    for i in range(info.byte_offset + 16, info.byte_offset + min(info.size, 400)):
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    assert run("inspect", bad).exit_code == 0  # metadata is intact
    assert_one_line_error(run("inspect", bad, "--check"), str(bad), "'video'", "corrupt")


# ---- folders ------------------------------------------------------------------------------------
def test_inspect_v2_folder_lists_recordings_and_split_counts(v2_folder):
    result = run("inspect", v2_folder, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kind"] == "v2-folder" and report["problems"] == []
    train = json.loads((v2_folder / "train.json").read_text())
    test = json.loads((v2_folder / "test.json").read_text())
    assert [r["name"] for r in report["recordings"]] == ["batch_01", "batch_02"]
    for rec in report["recordings"]:
        key = rec["name"] + ".mat"
        assert rec["video"]["frames"] == 240
        assert rec["train"] == len(train[key]) and rec["test"] == len(test[key])
        assert rec["neither"] == 240 - len(train[key]) - len(test[key]) > 0
        assert rec["timestamps"]["rows"] == 240 and rec["currents"]["rows"] == 2 * int(np.ceil(240 / 25))
        assert rec["video"]["variables"]["data"]["shape"] == [16, 16, 3, 240]
    text = run("inspect", v2_folder).output
    assert "V2 folder with 2 recording(s)" in text and "batch_02: 240 frames" in text


def test_inspect_v2_folder_with_missing_and_extra_pieces_exits_1(tmp_path, v2_folder):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(v2_folder, broken)
    (broken / "currents" / "batch_02.csv").unlink()
    (broken / "timestamps" / "batch_09.csv").write_text("timestamp\n")
    result = run("inspect", broken)
    assert result.exit_code == 1
    assert "problem: currents/batch_02.csv: expected this file for its video, got none" in result.output
    assert ("problem: timestamps/batch_09.csv: expected only files named after videos/*.mat in timestamps/, "
            "got an extra file") in result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {broken}: 2 problem(s) found"
    (broken / "train.json").write_text("{not json")
    assert "train.json: expected JSON" in run("inspect", broken).output


def test_inspect_folder_of_v1_files(tmp_path):
    out = tmp_path / "set"
    assert run("synth", out, "--recordings", 2, "--frames", 30, "--size", 12, "--no-progress").exit_code == 0
    report = json.loads(run("inspect", out, "--json").output)
    assert report["kind"] == "v1-folder" and [Path(f["path"]).name for f in report["files"]] == ["batch_01.mat",
                                                                                               "batch_02.mat"]


# ---- bad input to inspect -----------------------------------------------------------------------
def test_inspect_bad_input_is_one_line(tmp_path, v1_file):
    (tmp_path / "notes.txt").write_text("hello\n")
    assert_one_line_error(run("inspect", tmp_path / "notes.txt"), "unknown file type")
    (tmp_path / "empty.mat").write_bytes(b"")
    assert_one_line_error(run("inspect", tmp_path / "empty.mat"), "empty.mat")
    assert_one_line_error(run("inspect", tmp_path / "absent.mat"), "nothing there")
    cut = tmp_path / "cut.mat"
    cut.write_bytes(v1_file.read_bytes()[:5000])
    assert_one_line_error(run("inspect", cut), "truncated or corrupt")
    header_only = tmp_path / "header.mat"
    header_only.write_bytes(v1_file.read_bytes()[:600])
    assert_one_line_error(run("inspect", header_only), "truncated or corrupt")
    (tmp_path / "emptydir").mkdir()
    assert_one_line_error(run("inspect", tmp_path / "emptydir"), "a folder with none of them")


@pytest.mark.parametrize("name", ["corrupted_zlib_data.mat", "corrupted_zlib_checksum.mat", "malformed1.mat"])
def test_inspect_check_on_scipy_corrupt_files_is_one_line(name):
    path = SCIPY_DATA / name
    if not path.exists():
        pytest.skip(f"scipy's test data lacks {name}")
    assert_one_line_error(run("inspect", path, "--check"), name)


def test_truncated_v5_file_is_one_line(tmp_path):
    src = SCIPY_DATA / "testdouble_7.4_GLNX86.mat"
    cut = tmp_path / "cut5.mat"
    cut.write_bytes(src.read_bytes()[:150])
    assert_one_line_error(run("inspect", cut), "truncated or corrupt")


# ---- synth on the command line -----------------------------------------------------------------
def test_synth_writes_every_layout_and_storage(tmp_path):
    r = run("synth", tmp_path / "one.mat", "--frames", 40, "--size", "16x20", "--seed", 3, "--no-progress")
    assert r.exit_code == 0 and "wrote 40 frames (v1, matlab)" in r.output
    r = run("synth", tmp_path / "set", "--recordings", 3, "--frames", 20, "--size", 12, "--storage", "contiguous",
            "--json")
    summary = json.loads(r.output)
    assert summary["frames"] == 60 and [Path(f).name for f in summary["files"]] == [
        "batch_01.mat", "batch_02.mat", "batch_03.mat"]
    # recording i of a set is the same recording as --recordings 1 would write for index i
    synth.write_v1(tmp_path / "alone.mat", frames=20, size=12, storage="contiguous")
    with h5py.File(tmp_path / "set" / "batch_01.mat", "r") as a, h5py.File(tmp_path / "alone.mat", "r") as b:
        np.testing.assert_array_equal(a["video"][...], b["video"][...])
    r = run("synth", tmp_path / "v2", "--layout", "v2", "--storage", "v7", "--frames", 30, "--size", 8,
            "--preview", tmp_path / "p.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "v2" / "videos" / "batch_01.mat").read_bytes()[:19] == b"MATLAB 5.0 MAT-file"
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an existing picture is refused before anything is written, as an existing output is
    r = run("synth", tmp_path / "v2b", "--layout", "v2", "--frames", 30, "--size", 8, "--preview", tmp_path / "p.png")
    assert_one_line_error(r, "p.png", "got one that exists (--overwrite replaces it)")
    assert not (tmp_path / "v2b").exists()


def test_synth_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "exists.mat").write_bytes(b"user data")
    assert_one_line_error(run("synth", tmp_path / "exists.mat", "--frames", 5), "got one that exists (--overwrite replaces it)")
    assert (tmp_path / "exists.mat").read_bytes() == b"user data"
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(run("synth", tmp_path / "afile" / "out.mat", "--frames", 5), "through a file")
    for size in ("0", "3x64", "64x99999", "big", "8x8x8", "-5"):
        assert_one_line_error(run("synth", tmp_path / "s.mat", "--size", size), "--size")
    assert_one_line_error(run("synth", tmp_path / "s.mat", "--frames", 0), "--frames")
    assert_one_line_error(run("synth", tmp_path / "s.mat", "--frames", -7), "--frames")
    assert_one_line_error(run("synth", tmp_path / "s.mat", "--recordings", 0), "--recordings")
    assert_one_line_error(run("synth", tmp_path / "s.mat", "--fps", 0), "fps")
    big = run("synth", tmp_path / "s.mat", "--storage", "v7", "--size", "2048", "--frames", 200)
    assert_one_line_error(big, "2^31", "--storage", "storage 'matlab'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "exists.mat"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_synth_into_read_only_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line_error(run("synth", ro / "x.mat", "--frames", 5), "write")
    finally:
        ro.chmod(0o755)


def test_console_script_errors_have_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "fmdata"
    (tmp_path / "junk.mat").write_bytes(os.urandom(2048))
    proc = subprocess.run([str(exe), "inspect", str(tmp_path / "junk.mat")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: {tmp_path / 'junk.mat'}: expected a MATLAB MAT file "
                                                "(v4, v5/v7 or v7.3), got an unknown file type"]


def test_inspect_says_which_variables_convert_copies_and_what_a_random_frame_costs(v1_file, tmp_path):
    text = run("inspect", v1_file)
    with h5py.File(v1_file, "r") as f:
        chunks = f["video"].chunks  # (frames, channel, x, y): whole frames of 24x32x3 bytes each
    assert (f"video: copied by --layout source (chunks of {chunks[0]} frame(s)); a random frame decodes 1 chunk(s), "
            f"{format_bytes(chunks[0] * 24 * 32 * 3)} = {chunks[0]:.1f} x the frame") in text.output, text.output
    report = json.loads(run("inspect", v1_file, "--json").output)
    assert report["source_layout"]["video"] == {"copied": True, "reason": None, "chunk_frames": chunks[0], "random_read": {
        "chunks": 1, "decoded_bytes": chunks[0] * 24 * 32 * 3, "frame_bytes": 24 * 32 * 3}}
    plain = synth.write_v1(tmp_path / "plain.mat", frames=30, size=16, seed=1, storage="contiguous")
    text = run("inspect", plain)
    assert "video: not copied by --layout source: contiguous storage (not chunked)" in text.output, text.output
