"""fmdata stats: summaries and training-split normalisation equal plain numpy on small stores."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fmdata.compute import DaskOptions
from fmdata.derive import make_windows, stats
from fmdata.store import WindowParams, block_reader, open_store, schema

from builders import recording, split_from_runs, write_store

QUIET = DaskOptions(progress=False)


def _owned_train_rows(rec) -> np.ndarray:
    """Rows of one recording owned by training frames, by time: each row goes to the first frame at
    or after its time (independent of frame_current_end)."""
    owner = np.searchsorted(rec.frame_time, rec.current_time, side="left")
    ok = owner < len(rec.frame_time)
    return ok & (rec.split[np.minimum(owner, len(rec.split) - 1)] == schema.SPLIT_TRAIN)


@pytest.mark.parametrize("block_bytes", [None, 5 * 8 * 6 * 3])
def test_stats_equal_numpy(tmp_path, monkeypatch, block_bytes):
    if block_bytes:
        monkeypatch.setattr(block_reader, "TARGET_BLOCK_BYTES", block_bytes)  # many blocks, partial selections
    recs = [recording("v1", 90, 1), recording("v2", 120, 2, lead=6, gap_prob=0.2),
            recording("v1", 40, 3, split=split_from_runs([(1, 20), (0, 20)]))]
    path = write_store(tmp_path / "s.zarr", recs)
    s = stats.compute_stats(path, options=QUIET).to_dict()
    split = np.concatenate([r.split for r in recs])
    mask = np.concatenate([r.mask for r in recs])
    video = np.concatenate([r.video for r in recs])
    pix = (mask == 1).sum(axis=(1, 2))
    for code, name in schema.SPLIT_NAMES.items():
        sel = split == code
        d = s["splits"][name]
        assert d["frames"] == sel.sum() and d["abnormal_frames"] == (pix[sel] > 0).sum()
        assert d["abnormal_frame_share"] == pytest.approx((pix[sel] > 0).mean())
        assert d["abnormal_pixel_share"] == pytest.approx(pix[sel].sum() / (sel.sum() * 48))
        assert d["duration_s"] == pytest.approx(sel.sum() / 25.0)
    assert [r["frames"] for r in s["recordings"]] == [90, 120, 40]
    assert [r["train_frames"] for r in s["recordings"]] == [(r.split == 0).sum() for r in recs]
    assert s["recordings"][1]["abnormal_frames"] == (recs[1].mask.reshape(120, -1) == 1).any(1).sum()
    n = s["normalization"]
    train = video[split == schema.SPLIT_TRAIN].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(n["video_mean"], train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(n["video_std"], train.std(0), rtol=1e-12)
    cur = np.concatenate([r.current[_owned_train_rows(r)] for r in recs])
    assert n["current_rows"] == len(cur) and n["frames"] == (split == 0).sum()
    np.testing.assert_allclose(n["current_mean"], cur.mean(0), rtol=1e-12)
    np.testing.assert_allclose(n["current_std"], cur.std(0), rtol=1e-9)
    np.testing.assert_array_equal(n["current_min"], cur.min(0))
    np.testing.assert_array_equal(n["current_max"], cur.max(0))
    saved = open_store(path).attrs[schema.ATTR_STATS]
    assert saved["video_mean"] == n["video_mean"] and saved["current_std"] == n["current_std"]
    assert saved["provenance"]["video"]["array"] == schema.VIDEO
    json.dumps(s)  # JSON-able as it stands


def test_stats_are_reused_until_forced_and_window_balance_is_reported(tmp_path):
    recs = [recording("v2", 150, 7, lead=10)]
    path = write_store(tmp_path / "s.zarr", recs)
    assert stats.compute_stats(path, options=QUIET).normalization_status == "computed"
    make_windows(path, "w", WindowParams(frames=3, frame_step=4, current_seconds=4, current_rows=8), options=QUIET)
    s = stats.compute_stats(path, windows="w", options=QUIET).to_dict()
    assert s["normalization_status"] == "up to date"
    w = s["windows"]
    lab = (recs[0].mask == 1).any(axis=(1, 2))
    train = recs[0].split == schema.SPLIT_TRAIN
    assert w["splits"]["train"] == {"windows": int(train.sum()), "abnormal": int(lab[train].sum()),
                                    "normal": int((~lab[train]).sum()),
                                    "abnormal_share": pytest.approx(lab[train].mean())}
    assert w["recordings"][0]["windows"] == w["windows"] == int((recs[0].split != -1).sum())
    assert stats.compute_stats(path, force=True, options=QUIET).normalization_status == "computed"
    text = stats.format_stats(s)
    for word in ("split", "train", "test", "recording", "windows 'w'", "video R", "current A (A)", "fmf_stats"):
        assert word in text


def test_a_store_without_training_frames_reports_and_stores_no_normalisation(tmp_path):
    recs = [recording("v1", 30, 8, split=split_from_runs([(1, 30)]))]
    path = write_store(tmp_path / "s.zarr", recs)
    s = stats.compute_stats(path, options=QUIET).to_dict()
    assert s["normalization"] is None and s["normalization_status"] == "no training frames"
    assert s["splits"]["train"]["abnormal_frame_share"] is None
    assert schema.ATTR_STATS not in open_store(path).attrs
    assert "normalisation: no training frames" in stats.format_stats(s)


def test_cli_stats_prints_tables_or_json(tmp_path):
    from click.testing import CliRunner

    from fmcli.fmdata_main import main

    path = write_store(tmp_path / "s.zarr", [recording("v1", 60, 9)])
    text = CliRunner().invoke(main, ["stats", path])
    assert text.exit_code == 0 and "normalisation (computed" in text.output
    as_json = CliRunner().invoke(main, ["stats", path, "--json"])
    assert as_json.exit_code == 0
    d = json.loads(as_json.output)
    assert d["normalization_status"] == "up to date" and d["splits"]["train"]["frames"] == 36
    absent = CliRunner().invoke(main, ["stats", path, "--windows", "nope"])
    assert absent.exit_code == 1 and "expected a window table named 'nope'" in absent.output
