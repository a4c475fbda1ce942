"""fmdata preview: PNG and MP4 pictures of a window, and the CLI's one-line errors."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from fmcli.fmdata_main import main
from fmdata.compute import DaskOptions
from fmdata.derive import make_windows
from fmdata.derive.preview import MAX_PNG_FRAMES, render_preview
from fmdata.errors import FmDataError
from fmdata.store import WindowParams, open_store, schema

from builders import recording, write_store


@pytest.fixture()
def dark_store(tmp_path):
    """A store whose frames are flat dark grey, so the only yellow in a picture is a mask outline."""
    recs = [recording("v1", 120, 1, h=16, w=16), recording("v2", 160, 2, h=16, w=16, lead=20)]
    for r in recs:
        r.video[:] = 40
        r.mask[:] = 0
    recs[0].mask[100, 4:9, 5:11] = 1  # one abnormal frame: recording 0, frame 100
    return write_store(tmp_path / "s.zarr", recs)


def _yellow_pixels(img_bgr: np.ndarray) -> int:
    b, g, r = (img_bgr[..., i].astype(int) for i in range(3))
    return int(((r > 200) & (g > 200) & (b < 80)).sum())


def test_png_shows_the_clip_with_the_mask_outlined(dark_store, tmp_path):
    out = str(tmp_path / "p.png")
    r = render_preview(dark_store, 100, out, recording=0, params=WindowParams(frames=4, frame_step=5,
                                                                              current_seconds=2)).to_dict()
    assert r["clip"] == [85, 90, 95, 100] and r["label"] == 1 and r["current_rows"] == [51, 101]
    img = cv2.imread(out)
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 600
    assert _yellow_pixels(img) > 20
    quiet = render_preview(dark_store, 60, str(tmp_path / "q.png"), recording="v1-1",
                           params=WindowParams(frames=4, frame_step=5, current_seconds=2)).to_dict()
    assert quiet["label"] == 0 and _yellow_pixels(cv2.imread(str(tmp_path / "q.png"))) == 0


def test_the_preview_says_how_the_windows_current_rows_are_read(dark_store, tmp_path):
    """Issue 18: "158 current rows, read as 240" was never explained. The report (and the picture's
    caption) says how many distinct rows of the store the window holds, over how many of the seconds
    asked, and how they are resampled to the model's rows."""
    short = WindowParams(frames=4, frame_step=5, current_seconds=2)  # 25 rows/s: 50 rows, read as 240
    r = render_preview(dark_store, 100, str(tmp_path / "a.png"), recording=0, params=short)
    assert r.current_rows == [51, 101]
    assert r.current == ("current: the window holds 50 rows of the store (2.0 s of the 2 s of history); the model "
                         "reads 240 rows: each stored row 1 to 5 times (about 4.8), evenly spaced")
    assert r.current in r.summary()
    thin = WindowParams(frames=4, frame_step=5, current_seconds=2, current_rows=10)
    assert "the model reads 10 of them, evenly spaced (about every 5.0th)" in render_preview(
        dark_store, 100, str(tmp_path / "b.png"), recording=0, params=thin).current
    # a window at the start of a recording holds less history than asked, and says why
    early = render_preview(dark_store, 10, str(tmp_path / "c.png"), recording=0, params=short).current
    assert "the window holds 11 rows of the store (0.4 s of the 2 s of history: the recording begins later)" in early


def test_a_long_clip_draws_a_bounded_picture(dark_store, tmp_path):
    out = str(tmp_path / "long.png")
    r = render_preview(dark_store, 100, out, recording=0, params=WindowParams(frames=100, frame_step=1,
                                                                              current_seconds=2)).to_dict()
    assert r["clip"] == list(range(1, 101))  # the report names every clip frame
    img = cv2.imread(out)
    # at most MAX_PNG_FRAMES columns of 1.5 in at 110 dpi (100 columns would be 16,500 pixels wide)
    assert img is not None and img.shape[1] <= 1.5 * MAX_PNG_FRAMES * 110 + 10
    assert _yellow_pixels(img) > 20  # the labelled frame, with its mask, is among those drawn


def test_preview_of_a_stored_window_uses_that_table(dark_store, tmp_path):
    p = WindowParams(frames=3, frame_step=7, current_seconds=5, current_rows=10)
    make_windows(dark_store, "w", p, options=DaskOptions(progress=False))
    table = open_store(dark_store).window_table("w")
    row = table.table[table.column("frame") == 120 + 30][0]  # recording 1, local frame 30
    r = render_preview(dark_store, 30, str(tmp_path / "w.png"), recording=1, windows="w").to_dict()
    assert r["frame"] == 150 and r["clip"] == [int(c) - 120 for c in row[6:]]
    assert r["current_rows"] == [int(row[4]), int(row[5])]
    gap_frame = 120 + int(np.flatnonzero(open_store(dark_store)[schema.SPLIT][120:] == schema.SPLIT_NONE)[0])
    with pytest.raises(FmDataError, match="no window there"):
        render_preview(dark_store, gap_frame, str(tmp_path / "x.png"), windows="w")


def test_mp4_plays_every_frame_from_the_clip_start(dark_store, tmp_path):
    out = str(tmp_path / "c.mp4")
    r = render_preview(dark_store, 100, out, recording=0, params=WindowParams(frames=4, frame_step=5)).to_dict()
    assert r["frames_written"] == 16
    cap = cv2.VideoCapture(out)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 16 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    assert _yellow_pixels(frames[-1]) > 10 and _yellow_pixels(frames[0]) == 0


@pytest.mark.parametrize("args,message,code", [
    (["--frame", "999"], "Invalid value for '--frame': expected a frame in 0..279, got 999", 2),
    (["--frame", "5", "--recording", "nope"], "Invalid value for '--recording': expected a recording id 0..1 or a name",
     2),
    (["--frame", "170", "--recording", "1"],
     "Invalid value for '--frame': expected a frame in 0..159 (recording 1 has 160 frames), got 170", 2),
    (["--frame", "5", "--out", "x.gif"], "Invalid value for '--out': x.gif: expected a file name ending in .png or .mp4",
     2),
    (["--frame", "5", "--windows", "absent"], "expected a window table named 'absent'", 1),
    (["--frame", "5", "--out", "new/p.png"], "expected an existing folder for the preview, got none", 2),
])
def test_bad_input_is_one_line_and_exit_code(dark_store, args, message, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["preview", dark_store, *args])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["s.zarr"]  # the store only: nothing written, no folder made


def test_cli_writes_the_picture(dark_store, tmp_path):
    out = tmp_path / "cli.png"
    res = CliRunner().invoke(main, ["preview", dark_store, "--frame", "100", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "abnormal" in res.output and out.stat().st_size > 10_000


def test_an_existing_file_is_replaced_only_when_told_and_only_a_preview(dark_store, tmp_path):
    out = tmp_path / "mine.png"
    out.write_bytes(b"not a preview")
    res = CliRunner().invoke(main, ["preview", dark_store, "--frame", "100", "--out", str(out)])
    assert res.exit_code == 1 and "got one that exists (--overwrite replaces it)" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert out.read_bytes() == b"not a preview"
    # --overwrite replaces only what preview made: not a user's picture (a real PNG included), nor a folder
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    fig.savefig(tmp_path / "drawn.png")
    (tmp_path / "folder.png").mkdir()
    for name in ("mine.png", "drawn.png", "folder.png"):
        before = (tmp_path / name).read_bytes() if (tmp_path / name).is_file() else None
        res = CliRunner().invoke(main, ["preview", dark_store, "--frame", "100", "--out", str(tmp_path / name),
                                        "--overwrite"])
        assert res.exit_code == 1 and "--overwrite replaces only what this command made" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
        assert before is None or (tmp_path / name).read_bytes() == before
    assert (tmp_path / "folder.png").is_dir()
    res = CliRunner().invoke(main, ["preview", dark_store, "--frame", "100", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    first = (tmp_path / "p.png").read_bytes()
    res = CliRunner().invoke(main, ["preview", dark_store, "--frame", "90", "--out", str(tmp_path / "p.png"),
                                    "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").read_bytes() != first
    # no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn.png", "folder.png", "mine.png", "p.png", "s.zarr"]


def test_a_video_replaces_nothing_unless_told_and_only_a_preview(dark_store, tmp_path):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"someone's video")
    with pytest.raises(FmDataError, match="got one that exists"):
        render_preview(dark_store, 100, str(out))
    with pytest.raises(FmDataError, match="only what this command made"):
        render_preview(dark_store, 100, str(out), overwrite=True)
    assert out.read_bytes() == b"someone's video"
    mine = tmp_path / "mine.mp4"
    render_preview(dark_store, 100, str(mine))
    report = render_preview(dark_store, 90, str(mine), overwrite=True)
    cap = cv2.VideoCapture(str(mine))
    assert report.frames_written and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == report.frames_written
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "mine.mp4", "s.zarr"]  # written beside, moved
