"""The installed console scripts, the packaging and the store contract."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fmdata import store
from fmdata.errors import FmDataError
from fmdata.store import schema


@pytest.mark.parametrize("prog", ["fmdata", "fmmodel"])
def test_console_scripts_answer_help_and_version(prog):
    exe = __import__("shutil").which(prog) or pytest.fail(f"{prog} is not installed on PATH")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert prog in out and "0." in out
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "Usage:" in helptext


def test_fmdata_imports_without_torch():
    # the fmdata commands' modules too: their options share the model sizes table, which needs no torch
    code = ("import sys, fmdata, fmdata.store, fmdata.store.schema, fmcli.fmdata_main, fmcli.data_convert, "
            "fmcli.data_derive, fmcli.data_source; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_commands_import_matplotlib_only_when_they_draw():
    # every fmmodel command's module, and the modules that draw: matplotlib (0.4-0.8 s of CPU) comes with
    # the first picture (fmdata.store.atomic.new_figure), not with the import
    code = ("import sys, fmcli.model_commands, fmcli.model_alarms, fmcli.model_benchmark, fmcli.model_watch, "
            "fmcli.model_export, fmcli.model_bench_data, fmcli.data_derive, fmdata.synth.picture, "
            "fmmodel.scoring.report, fmmodel.scoring.timeline, fmmodel.runs.curves, fmmodel.runs.benchmark_table; "
            "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if 'matplotlib' in m); "
            "from fmdata.store.atomic import new_figure; new_figure(figsize=(1, 1)); "
            "assert 'matplotlib.figure' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _recording(n, m, seed):
    rng = np.random.default_rng(seed)
    return store.RecordingArrays(
        video=rng.integers(0, 256, (n, 8, 6, 3), dtype=np.uint8),
        mask=(rng.random((n, 8, 6)) > 0.9).astype(np.uint8),
        split=np.where(np.arange(n) < n // 2, schema.SPLIT_TRAIN, schema.SPLIT_TEST).astype(np.int8),
        frame_time=np.arange(n) / 25.0,
        current=rng.normal(9000, 100, (m, 3)),
        current_time=np.arange(m) * 0.5,
        frame_current_end=np.minimum(np.arange(n) // 12 + 1, m).astype(np.int64),
        info=schema.RecordingInfo(name=f"r{seed}", source_path="mem", source_bytes=0, layout="v1",
                                  n_frames=n, n_current=m))


def test_store_round_trip_keeps_every_element_and_axis_names(tmp_path):
    recs = [_recording(37, 5, 1), _recording(20, 3, 2)]
    store.write_store_from_arrays(tmp_path / "s.zarr", recs, fps=25.0, chunking=store.Chunking(1, 8))
    root = store.open_store(tmp_path / "s.zarr")
    meta = root.meta
    assert (meta.n_frames, meta.n_current, meta.n_recordings, meta.height, meta.width) == (57, 8, 2, 8, 6)
    np.testing.assert_array_equal(root[schema.VIDEO][:], np.concatenate([r.video for r in recs]))
    np.testing.assert_array_equal(root[schema.MASK][:], np.concatenate([r.mask for r in recs]))
    np.testing.assert_array_equal(root[schema.RECORDING][:], np.repeat([0, 1], [37, 20]))
    np.testing.assert_array_equal(root[schema.FRAME_CURRENT_END][37:], recs[1].frame_current_end + 5)
    f_off, c_off = root.offsets
    assert f_off.tolist() == [0, 37, 57] and c_off.tolist() == [0, 5, 8]
    assert tuple(root[schema.VIDEO].metadata.dimension_names) == schema.DIMS[schema.VIDEO]
    assert [r.name for r in root.recordings] == ["r1", "r2"]


def test_open_store_refuses_missing_foreign_and_incomplete(tmp_path):
    with pytest.raises(FmDataError, match="nothing there"):
        store.open_store(tmp_path / "absent.zarr")
    import zarr
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(FmDataError, match="an FMF store"):
        store.open_store(tmp_path / "plain.zarr")
    store.write_store_from_arrays(tmp_path / "s.zarr", [_recording(10, 2, 3)], fps=25.0)
    root = zarr.open_group(tmp_path / "s.zarr", mode="r+")
    root.attrs[schema.ATTR_STORE] = {**root.attrs[schema.ATTR_STORE], "complete": False}
    with pytest.raises(FmDataError, match="incomplete"):
        store.open_store(tmp_path / "s.zarr")


def test_a_plain_install_holds_every_package(tmp_path):
    """A wheel (what `pip install .` installs) carries every package and sub-package of the source."""
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "demo-out",
                                                             "bench-out", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packed = {os.path.dirname(n) for n in zf.namelist() if n.endswith("/__init__.py")}
    on_disk = set()
    for top, name in (("fmdata", "fmdata"), ("fmmodel", "fmmodel"), ("cli", "fmcli")):  # cli/ installs as fmcli
        for init in (src / top).rglob("__init__.py"):
            sub = init.parent.relative_to(src / top).as_posix()  # "." for the package itself
            on_disk.add(name if sub == "." else f"{name}/{sub}")
    assert packed == on_disk and {"fmdata/store", "fmcli"} <= packed


# a folder of one machine (a workplace, a user's home, a mount) named as an absolute path
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(work|root|home|Users|mnt)(/|\b)")


def test_no_file_of_the_repository_names_a_folder_of_one_machine():
    """What the repository needs outside itself it finds through the environment or beside the
    checkout (the reference fixtures: tests/runs.py), never at an absolute path of one machine."""
    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    found = []
    for name in filter(None, listed.stdout.split("\0")):
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):  # binary data; deleted, not yet staged
            continue
        found += [f"{name}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
                  if _MACHINE_PATH.search(line)]
    assert not found, "\n".join(found)
