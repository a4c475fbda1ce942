"""Window tables: the reference sampler reproduced, policies checked by property tests."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmdata.derive import build_window_table, make_windows
from fmdata.derive.windows import FrameIndex, window_for_frame
from fmdata.errors import FmDataError
from fmdata.store import WindowParams, current_row_indices, open_store, schema
from fmdata.store.window_table import clip_frames, current_rule, current_window

from builders import frame_index, recording, split_from_runs, write_store


def reference_sample(rec, f: int, frames: int, step: int, seconds: int, rows: int):
    """The reference sampler (docs/reference-protocol.md, "Samples"), one sample at a time, written plainly.

    Only the start-of-recording clip is deterministic (clamped to frame 0) instead of random.
    Returns (clip frame indices, current row indices), local to the recording.
    """
    clip = [max(0, f - k * step) for k in range(frames - 1, -1, -1)]
    distinct = sorted(set(rec.current_time.tolist()))
    i = distinct.index(rec.frame_time[f])
    chosen = set(distinct[max(0, i - seconds + 1):i + 1])
    picked = [j for j, t in enumerate(rec.current_time.tolist()) if t in chosen]
    if len(picked) < rows:
        picked = [picked[k] for k in np.linspace(0, len(picked) - 1, rows).astype(np.int32)]
    return clip, picked


@pytest.mark.parametrize("lead,gap_prob", [(130, 0.0), (5, 0.0), (40, 0.2)])
def test_reference_policy_reproduces_the_reference_sampler_on_v2(lead, gap_prob):
    recs = [recording("v2", 260, 3, lead=lead, gap_prob=gap_prob), recording("v2", 180, 4, lead=lead)]
    ix = frame_index(recs)
    for seconds, rows in ((120, 240), (4, 8)):
        wt = build_window_table(ix, WindowParams(frames=10, frame_step=18, current_seconds=seconds,
                                                 current_rows=rows))
        assert wt.params["current_rules"] == ["distinct-seconds", "distinct-seconds"]
        checked = 0
        for row in wt.table:
            r = row[1]
            rec, f_loc = recs[r], row[0] - ix.frame_offsets[r]
            if rec.frame_time[f_loc] not in set(rec.current_time.tolist()):
                continue  # the reference itself fails on such frames (timestamp not found)
            clip, picked = reference_sample(rec, int(f_loc), 10, 18, seconds, rows)
            np.testing.assert_array_equal(row[6:] - ix.frame_offsets[r], clip)
            got = current_row_indices(row[4], row[5], rows) - ix.current_offsets[r]
            np.testing.assert_array_equal(got, picked)
            checked += 1
        assert checked > 100


def test_linspace_over_the_range_equals_the_reference_resampling_for_240_rows():
    for start in (0, 7, 123_456, 10**9 + 3):
        for n in range(1, 241):
            ref = start + np.linspace(0, n - 1, 240).astype(np.int32)
            np.testing.assert_array_equal(np.linspace(start, start + n - 1, 240).astype(int), ref)
            np.testing.assert_array_equal(current_row_indices(start, start + n, 240), ref)


def test_v1_current_window_covers_the_last_seconds_and_clamps_at_the_start():
    recs = [recording("v1", 300, 5)]
    ix = frame_index(recs)
    wt = build_window_table(ix, WindowParams(frames=4, frame_step=3, current_seconds=2.0, current_rows=10))
    assert wt.params["current_rules"] == ["time-span"]
    by_frame = {int(r[0]): r for r in wt.table}
    late, early = by_frame[150], by_frame[20]
    assert (late[4], late[5]) == (101, 151)  # 50 rows = 2 s at 25 fps, ending at the frame's own row
    assert (early[4], early[5]) == (0, 21)  # recording start: what exists, resampled by the reader
    np.testing.assert_array_equal(by_frame[2][6:], [0, 0, 0, 2])  # clip clamped to frame 0


@st.composite
def recordings_and_params(draw):
    recs = []
    for _ in range(draw(st.integers(1, 3))):
        runs = draw(st.lists(st.tuples(st.sampled_from([0, 1, -1]), st.integers(1, 60)), min_size=1, max_size=5))
        split = split_from_runs(runs)
        layout = draw(st.sampled_from(["v1", "v2"]))
        kw = {} if layout == "v1" else {"lead": draw(st.integers(-3, 12)), "gap_prob": draw(st.sampled_from([0, 0.3]))}
        recs.append(recording(layout, len(split), draw(st.integers(0, 10**6)), h=2, w=2, split=split, **kw))
    params = WindowParams(frames=draw(st.integers(1, 6)), frame_step=draw(st.integers(1, 9)),
                          current_seconds=float(draw(st.integers(1, 6))), current_rows=draw(st.integers(1, 20)),
                          stride=draw(st.integers(1, 4)), policy=draw(st.sampled_from(schema.WINDOW_POLICIES)))
    return recs, params


def _blocks(ix):
    change = np.r_[True, (ix.recording[1:] != ix.recording[:-1]) | (ix.split[1:] != ix.split[:-1])]
    return np.cumsum(change) - 1, np.flatnonzero(change)


def _owner(ix, rows):
    """First frame (global) whose frame_current_end passes each current row, within its recording."""
    return np.searchsorted(ix.frame_current_end, rows, side="right")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recordings_and_params())
def test_window_tables_respect_recordings_splits_and_strides(case):
    recs, params = case
    ix = frame_index(recs)
    wt = build_window_table(ix, params)
    t = wt.table
    f, r, s, lab, c0, c1, clip = t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4], t[:, 5], wt.clip
    assert clip.shape == (len(t), params.frames)
    np.testing.assert_array_equal(r, ix.recording[f])
    np.testing.assert_array_equal(s, ix.split[f])
    np.testing.assert_array_equal(lab, ix.frame_label[f])
    assert np.all(s != schema.SPLIT_NONE)
    # never crosses a recording, frames or current rows
    assert np.all((clip >= ix.frame_offsets[r][:, None]) & (clip < ix.frame_offsets[r + 1][:, None]))
    assert np.all(clip[:, -1] == f) and np.all(np.diff(clip, axis=1) >= 0)
    assert np.all((ix.current_offsets[r] <= c0) & (c0 < c1) & (c1 <= ix.current_offsets[r + 1]))
    assert np.all(np.diff(f) > 0)
    ref1 = build_window_table(ix, WindowParams(**{**params.__dict__, "policy": "reference", "stride": 1}))
    pol1 = build_window_table(ix, WindowParams(**{**params.__dict__, "stride": 1}))
    block_of, block_first = _blocks(ix)
    if params.policy == "reference" and params.stride == 1:
        # every labelled frame of a split exactly once
        np.testing.assert_array_equal(f, np.flatnonzero(ix.split != schema.SPLIT_NONE))
    if params.policy == "strict":
        # every frame and current row inside the labelled frame's split block, history complete
        assert np.all(block_of[clip] == block_of[f][:, None])
        np.testing.assert_array_equal(clip, f[:, None] - (params.frames - 1 - np.arange(params.frames)) * params.frame_step)
        if len(t):
            assert np.all(_owner(ix, c0) >= block_first[block_of[f]]) and np.all(_owner(ix, c1 - 1) <= f)
        # a strict window is the reference window of the same frame, kept whole
        ref_rows = {int(x[0]): x for x in ref1.table}
        for row in pol1.table:
            np.testing.assert_array_equal(row, ref_rows[int(row[0])])
    # stride keeps every stride-th window of each block, first one included
    kept = pol1.table[:, 0]
    b = block_of[kept]
    rank = np.arange(len(kept)) - np.searchsorted(b, b)
    np.testing.assert_array_equal(f, kept[rank % params.stride == 0])


def test_strict_drops_exactly_the_windows_that_reach_outside_their_block():
    split = split_from_runs([(0, 200), (-1, 20), (1, 150)])
    recs = [recording("v1", len(split), 9, h=2, w=2, split=split)]
    ix = frame_index(recs)
    p = WindowParams(frames=3, frame_step=10, current_seconds=2.0, current_rows=8, policy="strict")
    f = build_window_table(ix, p).column("frame")
    # V1: 2 s = 50 rows (frame i owns row i); the clip reaches 20 frames back. Train block at 0:
    # a time-span window is full once a row of the recording lies at or before its left edge
    # (i >= 50). Test block at 220: its 50 rows must all be owned by the block (i - 49 >= 220).
    expect = np.r_[np.arange(50, 200), np.arange(220 + 49, 370)]
    np.testing.assert_array_equal(f, expect)


def test_window_for_frame_matches_the_reference_table_row():
    recs = [recording("v2", 200, 11, lead=20), recording("v1", 120, 12)]
    ix = frame_index(recs)
    p = WindowParams(frames=5, frame_step=7, current_seconds=10, current_rows=20)
    table = build_window_table(ix, p).table
    for row in table[::37]:
        np.testing.assert_array_equal(window_for_frame(ix, int(row[0]), p).table[0], row)
    none_frame = int(np.flatnonzero(ix.split == schema.SPLIT_NONE)[0])
    one = window_for_frame(ix, none_frame, p).table[0]
    assert one[0] == none_frame and one[2] == schema.SPLIT_NONE


def test_make_windows_stores_the_table_and_is_idempotent(tmp_path):
    recs = [recording("v2", 150, 21, lead=8), recording("v1", 90, 22)]
    path = write_store(tmp_path / "s.zarr", recs)
    p = WindowParams(frames=4, frame_step=5, current_seconds=6, current_rows=12)
    out = make_windows(path, "w", p, options=_quiet()).to_dict()
    assert out["status"] == "written"
    root = open_store(path)
    stored = root.window_table("w")
    np.testing.assert_array_equal(stored.table, build_window_table(frame_index(recs), p).table)
    assert stored.params["policy"] == "reference" and stored.current_rows == 12
    assert make_windows(path, "w", p, options=_quiet()).status == "up to date"
    with pytest.raises(FmDataError, match="other parameters"):
        make_windows(path, "w", WindowParams(frames=3), options=_quiet())
    assert make_windows(path, "w", WindowParams(frames=3), force=True, options=_quiet()).status == "written"
    assert open_store(path).window_table("w").clip.shape[1] == 3


@pytest.mark.parametrize("kw", [{"frames": 0}, {"frame_step": 0}, {"current_seconds": 0.0},
                                {"current_rows": 0}, {"stride": 0}, {"policy": "random"},
                                {"frames": 1025}, {"frame_step": 2**31}, {"current_seconds": float("inf")},
                                {"current_seconds": 2.0**31}, {"current_rows": 65537}, {"frames": 10.0},
                                {"current_rows": True}, {"current_seconds": "120"}])
def test_bad_parameters_are_one_clear_error(kw):
    with pytest.raises(FmDataError, match="expected ") as err:
        WindowParams(**kw)
    assert err.value.field == next(iter(kw))  # the command line names its option from this


def test_a_clip_whose_frames_and_step_overflow_is_refused_not_wrapped_around():
    """(frames - 1) x step beyond 2^31 - 1 frames is refused (field frame_step): 9 x 2^62 once wrapped
    around int64 and built clips of frames far beyond the store."""
    with pytest.raises(FmDataError, match=r"spanning at most 2147483647 frames.*got 9 x 300000000") as err:
        WindowParams(frames=10, frame_step=300_000_000)
    assert err.value.field == "frame_step"
    WindowParams(frames=1024, frame_step=2_000_000)  # within the bound


def test_the_largest_clips_keep_the_clamped_windows_of_short_recordings():
    """The clip bound leaves the reference sampler alone: a 1,024-frame clip over recordings of 30 and
    50 frames clamps every clip to its recording's first frame."""
    recs = [recording("v1", 30, 1, h=2, w=2), recording("v2", 50, 2, h=2, w=2)]
    wt = build_window_table(frame_index(recs), WindowParams(frames=1024, frame_step=1, current_seconds=2.0,
                                                            current_rows=4))
    assert wt.clip.shape[1] == 1024 and len(wt) == int(np.sum(frame_index(recs).split != schema.SPLIT_NONE))
    first = np.array([0, 30])[wt.column("recording")]
    assert (wt.clip[:, 0] == first).all() and (wt.clip[:, -1] == wt.column("frame")).all()


def test_a_table_that_would_not_fit_in_memory_is_refused_before_it_is_built():
    """A billion frames (arrays that take no memory: one broadcast value each) with 1,024-frame clips
    would need about 24 TiB: refused, naming the clip frames, before any array is touched."""
    n = 10**9
    ix = FrameIndex(split=np.broadcast_to(np.int8(schema.SPLIT_TRAIN), (n,)),
                    recording=np.broadcast_to(np.int64(0), (n,)), frame_current_end=np.broadcast_to(np.int64(1), (n,)),
                    frame_label=np.broadcast_to(np.uint8(0), (n,)), frame_offsets=np.array([0, n]),
                    current_offsets=np.array([0, 1]), current_time=np.zeros(1))
    with pytest.raises(FmDataError, match=r"fit in memory.*1,000,000,000 windows x 1,030 columns.*TiB") as err:
        build_window_table(ix, WindowParams(frames=1024))
    assert err.value.field == "frames"


def _quiet():
    from fmdata.compute import DaskOptions

    return DaskOptions(progress=False)


def test_cli_windows_reports_counts_and_rejects_bad_options(tmp_path):
    from click.testing import CliRunner

    from fmcli.fmdata_main import main

    path = write_store(tmp_path / "s.zarr", [recording("v1", 80, 31)])
    ok = CliRunner().invoke(main, ["windows", path, "--name", "t", "--frames", "3", "--frame-step", "2",
                                   "--current-seconds", "1", "--current-rows", "8", "--policy", "strict"])
    assert ok.exit_code == 0, ok.output
    table = open_store(path).window_table("t")
    assert f"{len(table):,} windows (strict)" in ok.output and table.params["policy"] == "strict"
    bad = CliRunner().invoke(main, ["windows", path, "--name", "t", "--stride", "0"])
    assert bad.exit_code == 2 and "Invalid value for '--stride': expected a stride >= 1, got 0" in bad.output
    clash = CliRunner().invoke(main, ["windows", path, "--name", "t"])
    assert clash.exit_code == 1 and "pass --force to replace it" in clash.output


def test_the_rule_of_one_window_on_a_recordings_tail_gives_the_tables_windows():
    """``fmmodel watch`` applies window_table.current_window and clip_frames to what its rings hold:
    the newest rows and frames of a stream. On any tail of a recording that still holds a window's
    whole history they give the table's window (shifted by the tail's start)."""
    for layout, kw in (("v1", {}), ("v2", {"lead": 20, "gap_prob": 0.1})):
        rec = recording(layout, 400, 5, **kw)
        ix = frame_index([rec])
        params = WindowParams(frames=5, frame_step=4, current_seconds=6.0, current_rows=12)
        wt = build_window_table(ix, params)
        t = rec.current_time
        for row in wt.table[::7]:
            f, start, stop = int(row[0]), int(row[4]), int(row[5])
            np.testing.assert_array_equal(clip_frames(np.array([f]), 5, 4, 0)[0], row[6:])
            for k in (0, max(0, start - 3), start):  # a ring holding everything, or just enough
                s, e, _, _ = current_window(t[k:], np.array([stop - k]), params.current_seconds, current_rule(t))
                assert (int(s[0]) + k, int(e[0]) + k) == (start, stop), (layout, f, k)
