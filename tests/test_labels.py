"""fmdata labels: equal to numpy on the same masks, provenance, no-op re-runs, staleness."""
from __future__ import annotations

import numpy as np
import pytest

import fmdata
from fmdata.compute import DaskOptions
from fmdata.derive import labels
from fmdata.errors import FmDataError
from fmdata.store import block_reader, open_store, schema

from builders import recording, write_store

QUIET = DaskOptions(progress=False)


@pytest.mark.parametrize("chunk,shard,block_bytes", [(1, 16, None), (1, 16, 16 * 48 * 3), (4, None, 7 * 48)])
def test_labels_equal_numpy_on_the_same_masks(tmp_path, monkeypatch, chunk, shard, block_bytes):
    if block_bytes:
        monkeypatch.setattr(block_reader, "TARGET_BLOCK_BYTES", block_bytes)  # several Dask blocks, ragged end
    recs = [recording("v1", 101, 1), recording("v2", 70, 2, lead=3)]
    path = write_store(tmp_path / "s.zarr", recs, chunk=chunk, shard=shard)
    out = labels.compute_labels(path, options=QUIET).to_dict()
    mask = np.concatenate([r.mask for r in recs])
    want_pixels = (mask == 1).sum(axis=(1, 2))
    want_label = (want_pixels > 0).astype(np.uint8)
    root = open_store(path)
    np.testing.assert_array_equal(root[schema.FRAME_LABEL][:], want_label)
    np.testing.assert_array_equal(root[schema.ABNORMAL_PIXELS][:], want_pixels)
    assert root[schema.FRAME_LABEL].dtype == np.uint8 and root[schema.ABNORMAL_PIXELS].dtype == np.int32
    assert (out["status"], out["frames"], out["abnormal_frames"], out["abnormal_pixels"]) == \
        ("computed", 171, int(want_label.sum()), int(want_pixels.sum()))
    unit = block_reader.write_unit(root[schema.MASK])
    chunk = root[schema.FRAME_LABEL].chunks[0]
    assert chunk == block_reader.block_frames(root[schema.MASK])  # each Dask task wrote whole chunks
    assert chunk % unit == 0 or chunk == 171
    assert root[schema.FRAME_LABEL].metadata.dimension_names == ("frame",)


def test_provenance_names_the_source_and_parameters(tmp_path):
    path = write_store(tmp_path / "s.zarr", [recording("v1", 40, 3)])
    labels.compute_labels(path, options=QUIET)
    prov = open_store(path)[schema.FRAME_LABEL].attrs[schema.ATTR_PROVENANCE]
    assert prov["derived_from"]["array"] == schema.MASK and prov["derived_from"]["shape"] == [40, 8, 6]
    assert prov["toolkit_version"] == fmdata.__version__ and prov["algorithm"] == labels.LABELS_ALGORITHM
    assert "any(mask == 1)" in prov["rule"] and prov["scheduler"].startswith("local threads")


def test_rerun_is_a_no_op_force_recomputes_and_stale_labels_are_redone(tmp_path):
    path = write_store(tmp_path / "s.zarr", [recording("v1", 60, 4)])
    root = open_store(path, "r+")
    root[schema.MASK].attrs[schema.ATTR_CHECKSUMS] = {"0": "abc"}
    assert labels.compute_labels(path, options=QUIET).status == "computed"
    stamp = open_store(path)[schema.FRAME_LABEL].attrs[schema.ATTR_PROVENANCE]["created"]
    again = labels.compute_labels(path, options=QUIET).to_dict()
    assert again["status"] == "up to date" and again["frames"] == 60
    assert open_store(path)[schema.FRAME_LABEL].attrs[schema.ATTR_PROVENANCE]["created"] == stamp
    assert labels.compute_labels(path, force=True, options=QUIET).status == "computed"
    # the mask changed (its checksums differ): labels are stale, readers refuse them
    root = open_store(path, "r+")
    root[schema.MASK][0] = 1 - root[schema.MASK][0]
    root[schema.MASK].attrs[schema.ATTR_CHECKSUMS] = {"0": "def"}
    assert not labels.labels_up_to_date(open_store(path))
    with pytest.raises(FmDataError, match="fmdata labels"):
        labels.read_labels(open_store(path))
    assert labels.compute_labels(path, options=QUIET).status == "computed"
    assert open_store(path)[schema.ABNORMAL_PIXELS][0] == int((open_store(path)[schema.MASK][0] == 1).sum())


def test_a_run_that_died_before_provenance_counts_as_missing(tmp_path):
    path = write_store(tmp_path / "s.zarr", [recording("v1", 30, 5)])
    labels.compute_labels(path, options=QUIET)
    root = open_store(path, "r+")
    del root[schema.ABNORMAL_PIXELS].attrs[schema.ATTR_PROVENANCE]
    assert not labels.labels_up_to_date(open_store(path))
    assert labels.compute_labels(path, options=QUIET).status == "computed"


def test_not_a_store_is_one_clear_error(tmp_path):
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(FmDataError, match="x.txt: expected an FMF Zarr store"):
        labels.compute_labels(str(tmp_path / "x.txt"), options=QUIET)


def test_cli_labels_then_up_to_date_and_option_errors(tmp_path):
    from click.testing import CliRunner

    from fmcli.fmdata_main import main

    path = write_store(tmp_path / "s.zarr", [recording("v1", 50, 6)])
    first = CliRunner().invoke(main, ["labels", path])
    assert first.exit_code == 0 and "labelled 50 frames" in first.output
    second = CliRunner().invoke(main, ["labels", path])
    assert second.exit_code == 0 and "labels up to date" in second.output
    both = CliRunner().invoke(main, ["labels", path, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert both.exit_code == 2 and "Invalid value for '--scheduler'" in both.output and "got both" in both.output
    missing = CliRunner().invoke(main, ["labels", str(tmp_path / "nothing.zarr")])
    assert missing.exit_code == 1 and "nothing.zarr: expected an FMF Zarr store" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1
