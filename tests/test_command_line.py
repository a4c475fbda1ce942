"""One command-line convention (issue 18, "The first hour"): the store is given the same way to every
command, ``fmdata convert`` takes the folder of V1 files that ``fmdata synth raw/`` writes, a
forgotten OUT is named as such, an existing output is refused in one wording, and a failed command
leaves no folder it created. Real ``fmdata``/``fmmodel`` processes on real files.
"""
from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from fmcli import data_convert, data_derive, fmmodel_main
from fmdata.errors import FmDataError
from fmdata.sources import inspect_path, open_sources
from fmdata.store import open_store
from fmdata.store.outputs import output_exists
from fmdata.synth import synthesize

from builders import cached_store
from processes import FMDATA, FMMODEL, one_line_error, run

QUICK = ["--device", "cpu", "--workers", "0", "--no-progress"]


def _tree(path: Path) -> list[tuple[str, int]]:
    """Every file below ``path`` with its modification time: what must stay as it was."""
    return sorted((str(p.relative_to(path)), p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """What `fmdata synth raw/ --recordings 2` writes: a folder of two V1 files."""
    folder = tmp_path_factory.mktemp("first-hour") / "raw"
    synthesize(f"{folder}/", recordings=2, frames=40, size=8)
    return folder


# ---- the store: the first argument, or --store --------------------------------------------------
def test_every_command_that_reads_a_store_takes_it_as_its_first_argument_or_as_store():
    # commands that read no store: watch reads live sources (a store only as one of them, --replay
    # STORE), export reads a checkpoint only
    no_store = {"watch", "export"}
    commands = [fmmodel_main.main.get_command(click.Context(fmmodel_main.main), name)
                for name in fmmodel_main.COMMANDS if name not in no_store]
    assert no_store <= set(fmmodel_main.COMMANDS)
    commands += [data_derive.labels_cmd, data_derive.windows_cmd, data_derive.stats_cmd, data_derive.preview_cmd,
                 data_convert.verify_command]
    assert {c.name for c in commands} >= {"train", "evaluate", "predict", "benchmark", "bench-data", "alarms"}
    for command in commands:
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        assert [a.name for a in arguments] == ["store"], command.name
        option = next(p for p in command.params if isinstance(p, click.Option) and "--store" in p.opts)
        assert "argument STORE" in (option.help or ""), command.name  # the help says the convention


def test_fmmodel_takes_the_store_as_fmdata_does(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    # the audit's line: `fmmodel train fmf.zarr` said "Got unexpected extra argument (fmf.zarr)";
    # now it trains on it (stopped here by a table that is not there, after opening the store)
    one_line_error(run([FMMODEL, "train", store, "--windows", "nosuch", "--out", tmp_path / "run", *QUICK]), 1,
                   "nosuch")
    r = run([FMMODEL, "evaluate", store, "--store", tmp_path / "other.zarr", "--checkpoint", "best.pt", *QUICK])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"got STORE {store} and --store {tmp_path / 'other.zarr'}" in r.stderr  # both named
    r = run([FMMODEL, "predict", "--checkpoint", "best.pt", "--out", tmp_path / "p.zarr", *QUICK])
    assert r.returncode == 2 and "expected a store: give it as the first argument, STORE" in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == []


# ---- fmdata convert reads a folder of V1 files as inspect does -----------------------------------
def test_convert_takes_the_folder_of_v1_files_that_synth_wrote(raw, tmp_path):
    assert inspect_path(raw)["kind"] == "v1-folder"
    out = tmp_path / "fmf.zarr"
    r = run([FMDATA, "convert", raw, out, "--workers", "1", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert open_store(out).recording_names == ("batch_01", "batch_02")  # name order
    r = run([FMDATA, "verify", out, "--source", raw, "--workers", "1", "--no-progress"])
    assert r.returncode == 0, r.stderr + r.stdout  # every element, against the folder read the same way
    assert [s.name for s in open_sources([str(raw)])] == [s.name for s in open_sources(sorted(map(str, raw.glob("*.mat"))))]


def test_a_folder_with_neither_or_both_layouts_is_one_line(raw, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no recordings here")
    mixed = tmp_path / "mixed"
    (mixed / "videos").mkdir(parents=True)
    (mixed / "batch_01.mat").write_bytes((raw / "batch_01.mat").read_bytes())
    for folder, needle in ((empty, "got a folder with none of them"), (mixed, "got both: videos beside 1 .mat")):
        for read in (open_sources, inspect_path):
            with pytest.raises(FmDataError, match=needle) as err:
                read([str(folder)]) if read is open_sources else read(folder)
            assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_a_forgotten_out_is_named_and_nothing_is_written(raw):
    before = _tree(raw)
    for args in ([raw / "batch_01.mat", raw / "batch_02.mat"], [raw]):
        line = one_line_error(run([FMDATA, "convert", *args, "--no-progress"]), 2, "'OUT'",
                              "expected OUT after the sources")
        assert "--overwrite" not in line
    assert _tree(raw) == before


# ---- an existing output: one wording everywhere --------------------------------------------------
def test_an_existing_output_is_refused_in_one_wording(raw, tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    taken = {name: tmp_path / name for name in ("taken.zarr", "taken.mat", "taken.png", "taken-predictions.zarr",
                                                "taken.pt2")}
    for path in taken.values():
        path.write_text("the user's")
    lines = {
        "convert": run([FMDATA, "convert", raw / "batch_01.mat", taken["taken.zarr"], "--no-progress"]),
        "synth": run([FMDATA, "synth", taken["taken.mat"], "--frames", "5", "--size", "8"]),
        "preview": run([FMDATA, "preview", store, "--frame", "100", "--out", taken["taken.png"]]),
        "predict": run([FMMODEL, "predict", store, "--checkpoint", "best.pt", "--out", taken["taken-predictions.zarr"],
                        *QUICK]),
        "export": run([FMMODEL, "export", "--checkpoint", "best.pt", "--format", "pt2", "--out", taken["taken.pt2"]]),
    }
    for (command, r), path in zip(lines.items(), taken.values()):
        one_line_error(r, 1)
        assert r.stderr.strip() == f"Error: {output_exists(path)}", command  # the same builder, the same words
        assert path.read_text() == "the user's"


# ---- a failed command leaves no folder it created ------------------------------------------------
def test_failed_synth_and_predict_leave_no_folder_they_made(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    # synth made the picture's folder before it refused a frame size
    r = run([FMDATA, "synth", tmp_path / "new" / "raw.mat", "--frames", "5", "--size", "3", "--preview",
             tmp_path / "pictures" / "sub" / "p.png"])
    one_line_error(r, 2, "--size")
    # predict made the video's folder before it found no checkpoint
    r = run([FMMODEL, "predict", store, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "a" / "p.zarr",
             "--video", tmp_path / "videos" / "sub" / "v.mp4", *QUICK])
    one_line_error(r, 1, "none.pt")
    assert sorted(os.listdir(tmp_path)) == []
