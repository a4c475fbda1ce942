"""Synthetic recordings: the simulation, the V1 files and V2 folders it writes, determinism."""
import csv
import json
import re
from datetime import datetime

import h5py
import hdf5storage
import mat73
import numpy as np
import pytest
import scipy.io

from fmdata import synth
from fmdata.errors import FmDataError
from fmdata.sources import matinfo
from fmdata.store import schema
from fmdata.synth import simulation
from fmdata.synth import writers as synth_write

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


# ---- V1 -----------------------------------------------------------------------------------------
def _expected_v1(frames, seed, size=(64, 64), index=0):
    """The MATLAB-order arrays a V1 file must hold, rendered straight from the simulation."""
    cfg = synth.SynthConfig(height=size[0], width=size[1])
    rec = synth_write.plan_v1(frames, cfg, seed, index)
    sim = synth_write.v1_frames(rec)
    video, mask, current = synth_write._render_rows(rec, sim)
    tti = (rec.split()[sim] == schema.SPLIT_TEST).astype(float)[None, :]
    return rec, {"video": video.transpose(1, 2, 3, 0), "label": mask.transpose(1, 2, 0).astype(bool),
                 "current": current.T, "train_test_index": tti}


@pytest.mark.parametrize("storage", ["matlab", "contiguous"])
def test_v1_file_reads_back_as_the_generated_matlab_arrays(tmp_path, storage):
    path = synth_write.write_v1(tmp_path / "rec.mat", frames=700, size=(40, 56), seed=5, storage=storage)
    rec, want = _expected_v1(700, 5, (40, 56))
    with h5py.File(path, "r") as f:  # independent reader 1: h5py plus the documented transposes
        assert f["video"].shape == (700, 3, 56, 40)  # MATLAB (H, W, 3, N) reversed
        np.testing.assert_array_equal(f["video"][...].transpose(3, 2, 1, 0), want["video"])
        np.testing.assert_array_equal(f["label"][...].transpose(2, 1, 0), want["label"])
        np.testing.assert_array_equal(f["current"][...].T, want["current"])
        np.testing.assert_array_equal(f["train_test_index"][...].T, want["train_test_index"])
        assert f["label"].attrs["MATLAB_class"] == b"logical" and f["current"].attrs["MATLAB_class"] == b"double"
    for loaded in (mat73.loadmat(path), hdf5storage.loadmat(str(path))):  # independent readers 2 and 3
        np.testing.assert_array_equal(loaded["video"], want["video"])
        np.testing.assert_array_equal(np.asarray(loaded["label"], bool), want["label"])
        np.testing.assert_allclose(loaded["current"], want["current"], rtol=0, atol=0)
        np.testing.assert_array_equal(np.ravel(loaded["train_test_index"]), want["train_test_index"][0])
    # the V1 index is 0/1 only: train block, then test block; the guard was cut out of the file
    tti = want["train_test_index"][0]
    assert set(np.unique(tti)) == {0.0, 1.0} and np.all(np.diff(tti) >= 0)
    assert rec.n_guard >= 1 and rec.n_train + rec.n_test == 700


def test_v7_storage_reads_back_with_scipy(tmp_path):
    path = synth_write.write_v1(tmp_path / "old.mat", frames=120, size=24, seed=2, storage="v7")
    assert matinfo.sniff_format(path) == "5"
    _, want = _expected_v1(120, 2, (24, 24))
    data = scipy.io.loadmat(path)
    np.testing.assert_array_equal(data["video"], want["video"])
    np.testing.assert_array_equal(data["label"].astype(bool), want["label"])
    np.testing.assert_array_equal(data["current"], want["current"])
    assert [c for _, _, c in scipy.io.whosmat(path)] == ["uint8", "logical", "double", "double"]


def test_identical_seeds_give_identical_bytes(tmp_path):
    a = synth_write.write_v1(tmp_path / "a.mat", frames=300, size=32, seed=11)
    b = synth_write.write_v1(tmp_path / "b.mat", frames=300, size=32, seed=11)
    c = synth_write.write_v1(tmp_path / "c.mat", frames=300, size=32, seed=12)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    va = synth_write.write_v2(tmp_path / "va", recordings=2, frames=150, size=24, seed=4)
    vb = synth_write.write_v2(tmp_path / "vb", recordings=2, frames=150, size=24, seed=4)
    files = sorted(p.relative_to(va) for p in va.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(vb) for p in vb.rglob("*") if p.is_file()) and len(files) == 8
    for rel in files:
        assert (va / rel).read_bytes() == (vb / rel).read_bytes(), rel


def test_header_date_comes_from_the_seed_not_the_clock(tmp_path):
    path = synth_write.write_v1(tmp_path / "a.mat", frames=50, size=16, seed=3)
    text = path.read_bytes()[:116].decode("ascii").rstrip()
    # MATLAB's text, then the note that marks synth's own files (what its --overwrite may replace)
    m = re.match(r"MATLAB 7\.3 MAT-file, Platform: GLNXA64, Created on: (.{24}) HDF5 schema 1\.00 \. fmdata synth$",
                 text)
    assert m, text
    created = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
    assert created.year in (2023, 2024) and created < datetime(2025, 1, 1)


# ---- V2 -----------------------------------------------------------------------------------------
def test_v2_folder_parses_as_the_reference_reads_it(tmp_path):
    out = synth_write.write_v2(tmp_path / "pixel-level", recordings=2, frames=900, size=32, fps=25, seed=8)
    assert sorted(p.name for p in out.iterdir()) == ["currents", "test.json", "timestamps", "train.json", "videos"]
    train = json.loads((out / "train.json").read_text())
    test = json.loads((out / "test.json").read_text())
    assert sorted(train) == sorted(test) == ["batch_01.mat", "batch_02.mat"]
    for key in train:
        name = key[:-4]
        with h5py.File(out / "videos" / key, "r") as f:  # the reference opens 'data' with h5py
            assert sorted(f) == ["data", "label"]
            n = f["data"].shape[0]
            assert f["data"].shape == (n, 3, 32, 32) and f["label"].shape == (n, 32, 32)
            labels = f["label"][...].reshape(n, -1).max(1)
        assert n == 900
        tr, te = np.array(train[key]), np.array(test[key])
        assert np.all(np.diff(tr) == 1) and np.all(np.diff(te) == 1) and tr[0] == 0 and te[-1] == n - 1
        assert te[0] - tr[-1] > 1  # a guard gap of frames in neither list
        assert labels[tr].any() and labels[te].any()
        with open(out / "timestamps" / f"{name}.csv") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == n + 1 and not STAMP.match(rows[0][0])  # header row, then one row per frame
        frame_stamps = [r[0] for r in rows[1:]]
        assert all(STAMP.match(s) for s in frame_stamps) and frame_stamps == sorted(frame_stamps)
        with open(out / "currents" / f"{name}.csv") as fh:
            crows = list(csv.reader(fh))
        assert crows[0] == ["timestamp", "phase_A", "phase_B", "phase_C"]
        cstamps = [r[0] for r in crows[1:]]
        amps = np.array([[float(x) for x in r[1:]] for r in crows[1:]])
        distinct, counts = np.unique(cstamps, return_counts=True)
        assert np.all(counts == 2)  # 2 Hz: two rows per second
        assert len(distinct) == int(np.ceil(n / 25))
        assert set(frame_stamps) <= set(distinct)
        assert 3000 <= amps.min() and amps.max() <= 16000 and 5000 < amps.mean() < 14000
        # the reference current window of the last frame: the last 120 distinct seconds, two rows each
        pos = int(np.searchsorted(distinct, frame_stamps[-1]))
        rows_window = amps[max(0, 2 * (pos + 1 - 120)):2 * (pos + 1)]
        assert rows_window.shape == (2 * min(120, pos + 1), 3)


# ---- the simulation -----------------------------------------------------------------------------
def test_render_is_the_same_whatever_the_block():
    rec = synth.simulate(600, synth.SynthConfig(height=32, width=24), seed=1)
    v_all, m_all = rec.render(0, 600)
    parts = [rec.render(s, min(600, s + 97)) for s in range(0, 600, 97)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), v_all)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), m_all)
    np.testing.assert_array_equal(rec.current(100, 250), rec.current(0, 600)[100:250])
    np.testing.assert_array_equal(rec.labels(), m_all.reshape(600, -1).max(1))
    assert v_all.shape == (600, 32, 24, 3) and v_all.dtype == np.uint8


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(FmDataError) as err:
        synth_write.parse_size("0x5")
    assert err.value.field == "size"
    with pytest.raises(FmDataError) as err:
        synth_write.parse_size("big")
    assert err.value.field == "size"
    with pytest.raises(FmDataError) as err:
        synth_write.write_v1(tmp_path / "a.mat", frames=0)
    assert err.value.field == "frames"
    with pytest.raises(FmDataError) as err:
        synth_write.write_v1(tmp_path / "a.mat", frames=5, storage="zip")
    assert err.value.field == "storage"
    synth_write.write_v1(tmp_path / "a.mat", frames=5, size=8)
    with pytest.raises(FmDataError, match="got one that exists"):
        synth_write.write_v1(tmp_path / "a.mat", frames=5, size=8)
    synth_write.write_v1(tmp_path / "a.mat", frames=6, size=8, overwrite=True)
    assert mat73.loadmat(tmp_path / "a.mat")["video"].shape == (8, 8, 3, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mat"]  # no temporary leftovers


# ---- content: what the video shows, what mist hides, what the current tells -------------------
def _spot_pixels(video):
    """Pixels with the hot spot's colour signature (strong red over green and blue)."""
    v = video.astype(np.int16)
    return (v[..., 0] - v[..., 1] > 95) & (v[..., 0] - v[..., 2] > 150)


def test_hot_spots_show_exactly_in_their_masks_and_dense_mist_hides_them():
    rec = synth.simulate(6000, synth.SynthConfig(height=32, width=32), seed=3)
    video, mask = rec.render(0, rec.n_frames)
    density = rec.mist_density(0, rec.n_frames)
    labels = mask.reshape(len(mask), -1).max(1)
    spot = _spot_pixels(video)
    clear = density == 0
    assert labels[clear].any() and (labels[clear] == 0).any()
    # in clear frames the spot colour appears only inside masks and covers most mask pixels
    assert not (spot[clear] & ~mask[clear].astype(bool)).any()
    assert spot[clear & (labels == 1)].sum() >= 0.8 * mask[clear].sum()
    # dense mist (density >= 1) covers every pixel: anomalies there are invisible in the video
    hidden = density >= 1.0
    assert (labels[hidden] == 1).sum() > 25, "the seed should put some anomalies under dense mist"
    assert not spot[hidden].any()
    fog = video[hidden].astype(np.int16)
    assert np.abs(fog[..., 0] - fog[..., 1]).max() < 20 and fog.min() > 150
    # light mist leaves the shell partly visible: pixel contrast between light and dense mist
    light = (density > 0.1) & (density < 0.5)
    assert video[light].std(axis=(1, 2, 3)).mean() > 3 * video[hidden].std(axis=(1, 2, 3)).mean()


def test_current_is_in_amperes_and_responds_to_anomalies():
    rec = synth.simulate(8000, synth.SynthConfig(height=16, width=16), seed=4)
    amps = rec.current(0, rec.n_frames)
    assert amps.shape == (8000, 3) and 5000 < amps.mean() < 14000 and amps.min() >= 3000 and amps.max() <= 16000
    ripple = np.abs(np.diff(amps, axis=0)).mean(0) / amps.mean(0)
    assert np.all((ripple > 0.002) & (ripple < 0.05))
    lift_in, lift_out = [], []
    for a in rec.anomalies:
        others = [p for p in range(3) if p != a.phase]
        lift = amps[:, a.phase] - amps[:, others].mean(1)
        mid = slice(a.start + (a.stop - a.start) // 4, a.stop - (a.stop - a.start) // 4)
        before = slice(max(0, a.start - 250), max(1, a.start - 50))
        lift_in.append(lift[mid].mean())
        lift_out.append(lift[before].mean())
    assert len(lift_in) >= 3
    assert np.mean(np.array(lift_in) - np.array(lift_out)) > 1000  # the spot's phase rises against the others


def _features(video, current, fps):
    """Frame features a small model can use: spot-coloured pixels, current imbalance and ripple."""
    spot = np.log1p(_spot_pixels(video).reshape(len(video), -1).sum(1))
    idx = np.arange(len(current))

    def causal_mean(x, k):
        cs = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), 0)
        lo = np.maximum(0, idx - k)
        return (cs[idx + 1] - cs[lo]) / (idx + 1 - lo)[:, None]

    dev = current - current.mean(1, keepdims=True)
    imbalance = np.abs(causal_mean(dev, int(fps)) - causal_mean(dev, int(90 * fps))).max(1) / 1000
    var = causal_mean(current**2, int(fps)) - causal_mean(current, int(fps)) ** 2
    ripple = (np.sqrt(np.maximum(var, 0)) / current.mean(1, keepdims=True)).max(1) * 100
    return np.column_stack([spot, imbalance, ripple])


def _logistic(x, y, steps=3000, lr=0.3):
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.column_stack([(x - mu) / sd, np.ones(len(x))])
    w = np.zeros(z.shape[1])
    for _ in range(steps):
        w -= lr * z.T @ (1 / (1 + np.exp(-z @ w)) - y) / len(y)
    return lambda xx: np.column_stack([(xx - mu) / sd, np.ones(len(xx))]) @ w > 0


def _f1(y, pred):
    tp, fp, fn = (pred & (y == 1)).sum(), (pred & (y == 0)).sum(), (~pred & (y == 1)).sum()
    return 2 * tp / (2 * tp + fp + fn)


def test_anomalies_are_learnable_from_video_and_current_and_current_sees_through_mist():
    cfg = synth.SynthConfig(height=32, width=32)
    parts = []
    for i in range(3):  # three recordings of 3,000 frames, trained on their train blocks
        rec = synth.simulate(3000, cfg, seed=0, index=i)
        video, mask = rec.render(0, rec.n_frames)
        parts.append((_features(video, rec.current(0, rec.n_frames), cfg.fps), mask.reshape(3000, -1).max(1),
                      rec.split(), rec.mist_density(0, rec.n_frames)))
    x, y, split, density = (np.concatenate([p[k] for p in parts]) for k in range(4))
    train, test = split == schema.SPLIT_TRAIN, split == schema.SPLIT_TEST
    both = _logistic(x[train], y[train])(x[test])
    assert _f1(y[test], both) >= 0.9
    hidden = (density[test] >= 1.0) & (y[test] == 1)
    assert hidden.sum() > 20
    video_only = _logistic(x[train][:, :1], y[train])(x[test][:, :1])
    current_only = _logistic(x[train][:, 1:], y[train])(x[test][:, 1:])
    assert video_only[hidden].mean() < 0.1 < 0.5 < current_only[hidden].mean()


def test_split_is_train_block_guard_gap_test_block():
    for n in (3, 10, 1000, 50000):
        train, guard, test = simulation.split_sizes(n, synth.SynthConfig())
        assert train + guard + test == n and min(train, guard, test) >= 1
        rec_split = synth.simulate(n, synth.SynthConfig(height=8, width=8), seed=1).split()
        codes = np.concatenate([np.full(train, schema.SPLIT_TRAIN), np.full(guard, schema.SPLIT_NONE),
                                np.full(test, schema.SPLIT_TEST)])
        np.testing.assert_array_equal(rec_split, codes)
    assert simulation.split_sizes(50000, synth.SynthConfig())[1] >= 8 * 25  # guard longer than a reference clip
    assert simulation.split_sizes(2, synth.SynthConfig()) == (2, 0, 0)


def test_dense_event_profile_packs_more_anomalies_and_bad_profiles_are_refused(tmp_path):
    frames = 6000
    share = {name: simulation.simulate(frames, simulation.SynthConfig(height=16, width=16, **knobs),
                                       seed=3, index=0).labels().mean()
             for name, knobs in simulation.EVENT_PROFILES.items()}
    assert share["dense"] > 1.3 * share["standard"] > 0
    with pytest.raises(FmDataError) as err:
        synth.synthesize(tmp_path / "x.mat", frames=100, size=16, events="busy")
    assert err.value.field == "events"
