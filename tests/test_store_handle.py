"""An open store (issue 17, item 2): a command opens its store once and passes the handle down.

The opens are counted through the library's own open function (``StoreHandle.open``, which
``fmdata.open_store`` is) and the zarr group opens beneath it (``Location.open_group``); the
columns through the one checked reader. What a handle keeps is read once, read-only, and pickles
to the location alone (DataLoader workers reopen it themselves); a derived write is seen through a
fresh handle.
"""
from __future__ import annotations

import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import fmdata.derive.labels as labels_module
import fmdata.store.handle as handle_module
from fmdata.derive import compute_labels, ensure_labels, labels_up_to_date, make_windows, read_labels
from fmdata.errors import FmDataError
from fmdata.store import Location, StoreHandle, open_store, schema
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.sampling import make_loader
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.registry import build_model
from fmmodel.runs.train import train
from fmmodel.scoring.evaluate import evaluate
from fmmodel.scoring.predict import predict

from builders import SHORT_WINDOWS, converted_store, corrupt_file
from runs import quick_config


class Opens:
    """Counts, while a test runs, the store's opens through ``StoreHandle.open`` (calls given a
    location, not a handle), its zarr group opens, the parses of its location from text, and the
    reads of each 1-D array through the checked column reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
        self.path = str(Location.parse(store).absolute())
        self.handles = self.groups = self.parses = 0
        self.columns: Counter[str] = Counter()
        open_, group, parse = StoreHandle.open.__func__, Location.open_group, Location.parse.__func__

        def counted_open(cls, store, mode="r", **kwargs):
            if not isinstance(store, StoreHandle) and self._ours(store):
                self.handles += 1
            return open_(cls, store, mode, **kwargs)

        def counted_group(loc, mode="r"):
            self.groups += self._ours(loc)
            return group(loc, mode)

        def counted_parse(cls, location, storage_options=None):
            self.parses += not isinstance(location, Location) and self._ours(location)
            return parse(cls, location, storage_options)

        def counted_column(read):
            def column(array, dtype=None, where=None):
                self.columns[array.path] += 1
                return read(array, dtype, where)
            return column

        monkeypatch.setattr(StoreHandle, "open", classmethod(counted_open))
        monkeypatch.setattr(Location, "open_group", counted_group)
        monkeypatch.setattr(Location, "parse", classmethod(counted_parse))
        for module in (handle_module, labels_module):  # the modules that read whole columns
            monkeypatch.setattr(module, "read_column", counted_column(module.read_column))

    def _ours(self, location) -> bool:
        return str(Location.absolute(location) if isinstance(location, Location) else
                   Location(str(location)).absolute()) == self.path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str, str]:
    """(store with labels and table "w", classifier checkpoint, segmenter checkpoint): tiny untrained
    models saved as the trainer saves them."""
    store = converted_store(tmp_path_factory)
    folder = tmp_path_factory.mktemp("handle-models")
    torch.manual_seed(0)
    cls = build_model("vicu_cls", size="tiny", image_size=(16, 16), frames=4, current_rows=20)
    seg = build_model("vicu_seg", size="tiny", image_size=(16, 16), frames=4, current_rows=20)
    paths = []
    for name, model in (("cls", cls), ("seg", seg)):
        path = folder / f"{name}.pt"
        save_checkpoint(path, model, orientation="reference", preprocessing="reference",
                        info={"window": SHORT_WINDOWS.to_dict()})
        paths.append(str(path))
    return store, paths[0], paths[1]


def test_evaluate_opens_its_store_once(checkpoints, tmp_path, monkeypatch):
    """One `fmmodel evaluate` (report folder, example pictures, a segmenter's masks) parses its store's
    location once, opens it once, and reads each of its columns once."""
    store, _, seg = checkpoints
    opens = Opens(monkeypatch, store)
    report = evaluate(store, seg, out=str(tmp_path / "eval"), examples=4, workers=0, device="cpu", progress=False)
    assert report["windows"]["count"] > 0 and (tmp_path / "eval" / "examples.png").is_file()
    assert (opens.handles, opens.groups, opens.parses) == (1, 1, 1)
    assert opens.columns and max(opens.columns.values()) == 1, opens.columns


def test_predict_and_train_open_their_store_once(checkpoints, tmp_path, monkeypatch):
    store, cls, _ = checkpoints
    opens = Opens(monkeypatch, store)
    summary = predict(store, cls, str(tmp_path / "p.zarr"), split="test", video=str(tmp_path / "p.mp4"),
                      video_max_frames=5, workers=0, device="cpu", progress=False)
    assert summary["windows"] > 0 and Path(summary["video"]).is_file()
    assert (opens.handles, opens.groups) == (1, 1) and max(opens.columns.values()) == 1
    opens = Opens(monkeypatch, store)
    train(quick_config(store, str(tmp_path / "run"), windows="w", preprocessing="reference", epochs=1,
                       max_steps_per_epoch=1, val_fraction=0.0), progress=False)
    assert (opens.handles, opens.groups) == (1, 1) and max(opens.columns.values()) == 1, opens.columns


def test_a_handle_reads_once_and_keeps_its_arrays_read_only(checkpoints, monkeypatch):
    store, _, _ = checkpoints
    opens = Opens(monkeypatch, store)
    s = open_store(store)
    assert open_store(s) is s and StoreHandle.open(s, "r") is s  # a handle passes through
    first = (s.split, s.frame_time, s.frame_recording, s.offsets, s.window_table("w"), read_labels(s))
    again = (s.split, s.frame_time, s.frame_recording, s.offsets, s.window_table("w"), read_labels(s))
    assert all(a is b for a, b in zip(first, again))
    assert opens.handles == 1 and max(opens.columns.values()) == 1
    for values in (s.split, s.frame_time, s.frame_offsets, s.window_table("w").table, read_labels(s)[0]):
        with pytest.raises(ValueError, match="read-only"):
            values[0] = 1
    f = s.frames_of("rec")
    assert s.recording_names == ("rec",) and (f.start, f.stop) == (0, s.meta.n_frames)
    with pytest.raises(FmDataError, match="expected a recording id 0..0 or a name in"):
        s.recording_index("other")


def test_a_handle_pickles_to_its_location_and_reopens_where_it_is_used(checkpoints):
    store, _, _ = checkpoints
    s = open_store(store)
    _ = s.split, s.root  # read and open: none of it travels
    copy = pickle.loads(pickle.dumps(s))
    assert set(copy.__dict__) == {"location", "mode", "require_complete", "_kept", "_lock"} and not copy._kept
    assert len(pickle.dumps(s)) < 1000
    np.testing.assert_array_equal(copy.split, s.split)  # opened again, lazily, here
    # a DataLoader worker (spawned) reading through zarr opens the store from the handle it received
    ds = FmfWindowDataset(s, "w", reader="zarr", target="both")
    here = make_loader(ds, batch_size=8, workers=0)
    there = make_loader(ds, batch_size=8, workers=1)
    for a, b in zip(here, there):
        for key in ("clip", "mask", "current", "frame"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


def test_labels_written_after_a_handle_opened_are_seen_through_a_fresh_one(tmp_path_factory, tmp_path):
    path = shutil.copytree(converted_store(tmp_path_factory), tmp_path / "s.zarr")
    for name in schema.DERIVED_FRAME_ARRAYS:
        shutil.rmtree(path / name)
    old = open_store(path)
    assert not labels_up_to_date(old)
    with pytest.raises(FmDataError, match="expected up-to-date frame labels"):
        read_labels(old)
    fresh = ensure_labels(old)
    assert fresh is not old and labels_up_to_date(fresh) and read_labels(fresh)[0].sum() > 0
    assert ensure_labels(fresh) is fresh  # up to date: the same handle
    assert compute_labels(fresh).status == "up to date"
    # what a derived writer given a handle replaces, that handle reads anew
    assert "again" not in fresh.window_tables
    assert make_windows(fresh, "again", SHORT_WINDOWS).status == "written" and "again" in fresh.window_tables
    assert make_windows(fresh, "again", SHORT_WINDOWS).status == "up to date"
    before = read_labels(fresh)[0]
    assert compute_labels(fresh, force=True).status == "computed" and read_labels(fresh)[0] is not before
    with pytest.raises(FmDataError, match="expected mode 'r' or 'r\\+'"):
        open_store(path, "w")


def test_the_xarray_view_is_lazy_with_frame_times_and_recordings(checkpoints, monkeypatch):
    xr = pytest.importorskip("xarray")
    store, _, _ = checkpoints
    s = open_store(store)
    reads = []
    get = handle_module._CheckedReads.__getitem__
    monkeypatch.setattr(handle_module._CheckedReads, "__getitem__", lambda self, key: reads.append(key) or get(self, key))
    view = s.to_xarray("rec")
    assert isinstance(view, xr.Dataset) and not reads  # nothing read yet
    assert dict(view.sizes) == {"frame": s.meta.n_frames, "y": 16, "x": 16, "channel": 3, "sample": s.meta.n_current,
                                "phase": 3}
    assert view.video.dims == tuple(s["video"].metadata.dimension_names)
    np.testing.assert_array_equal(view.frame_time.values, s.frame_time)
    assert set(view.recording.values) == {"rec"} and set(view.split.values) <= {"train", "test", "none"}
    assert list(view.phase.values) == ["A", "B", "C"] and view.attrs["recording"] == "rec"
    np.testing.assert_array_equal(view.video.isel(frame=300).values, s["video"][300])
    np.testing.assert_array_equal(view.current.values, s["current"][:])
    assert 0 < len(reads) <= 3  # the frame's block, the current's chunk(s)


def test_a_damaged_chunk_read_through_the_xarray_view_is_one_line(tmp_path_factory, tmp_path):
    pytest.importorskip("xarray")
    path = Path(shutil.copytree(converted_store(tmp_path_factory), tmp_path / "s.zarr"))
    shard = sorted((path / schema.VIDEO / "c").rglob("*"))
    corrupt_file(next(p for p in shard if p.is_file()), 0.0, 0.5)
    view = open_store(path).to_xarray()
    with pytest.raises(FmDataError, match=r"video frames? \d+.*expected"):
        view.video.isel(frame=slice(0, 4)).compute()
