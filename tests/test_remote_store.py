"""Stores and window tables at fsspec URLs: a real loopback S3 server (moto), memory:// and file://."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from fmdata import store
from fmdata.errors import FmDataError
from fmdata.store import Location, schema
from fmdata.store.window_table import WindowTable, window_columns, write_window_table


def _recording(n: int, m: int, seed: int, h: int = 8, w: int = 6) -> store.RecordingArrays:
    rng = np.random.default_rng(seed)
    return store.RecordingArrays(
        video=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        mask=(rng.random((n, h, w)) > 0.9).astype(np.uint8),
        split=np.where(np.arange(n) < n // 2, schema.SPLIT_TRAIN, schema.SPLIT_TEST).astype(np.int8),
        frame_time=np.arange(n) / 25.0 + seed,
        current=rng.normal(9000, 100, (m, 3)),
        current_time=np.arange(m) * 0.5,
        frame_current_end=np.minimum(np.arange(n) // 12 + 1, m).astype(np.int64),
        info=schema.RecordingInfo(name=f"r{seed}", source_path=f"/data/r{seed}.mat", source_bytes=123 * seed,
                                  layout="v1", n_frames=n, n_current=m))


RECS = [_recording(41, 5, 1), _recording(23, 3, 2)]
# on S3 every shard and chunk is one HTTP request: two shards of video, two chunks of current
CHUNKING = store.Chunking(chunk_frames=1, shard_frames=32, current_chunk=4)


def _expected() -> dict[str, np.ndarray]:
    f_off = np.array([0, 41, 64])
    c_off = np.array([0, 5, 8])
    return {
        schema.VIDEO: np.concatenate([r.video for r in RECS]),
        schema.MASK: np.concatenate([r.mask for r in RECS]),
        schema.SPLIT: np.concatenate([r.split for r in RECS]),
        schema.RECORDING: np.repeat([0, 1], [41, 23]),
        schema.FRAME_TIME: np.concatenate([r.frame_time for r in RECS]),
        schema.FRAME_CURRENT_END: np.concatenate([RECS[0].frame_current_end, RECS[1].frame_current_end + 5]),
        schema.CURRENT: np.concatenate([r.current for r in RECS]),
        schema.CURRENT_TIME: np.concatenate([r.current_time for r in RECS]),
        schema.RECORDING_FRAME_OFFSETS: f_off,
        schema.RECORDING_CURRENT_OFFSETS: c_off,
    }


def _assert_store_equals_recs(root: zarr.Group) -> None:
    meta = root.meta
    assert (meta.n_frames, meta.n_current, meta.n_recordings, meta.complete) == (64, 8, 2, True)
    for name, want in _expected().items():
        got = root[name][:]
        assert got.dtype == np.dtype(schema.DTYPES[name]), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert [r.source_path for r in root.recordings] == ["/data/r1.mat", "/data/r2.mat"]


@pytest.fixture(params=["s3", "memory", "file"])
def location(request, tmp_path) -> str:
    """A fresh store URL of each kind."""
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket").url("sets/demo.zarr")
    if request.param == "memory":
        return f"memory://fmf-test/{os.getpid()}/{request.node.name}.zarr"
    return (tmp_path / "demo.zarr").as_uri()


def test_store_round_trip_at_url_keeps_every_element(location):
    store.write_store_from_arrays(location, RECS, fps=25.0, chunking=CHUNKING)
    _assert_store_equals_recs(store.open_store(location))


def test_s3_store_really_lives_on_the_server_as_shards(s3_bucket):
    url = s3_bucket.url("a/b.zarr")
    explicit = Location.parse(url, s3_bucket.storage_options)
    store.write_store_from_arrays(explicit, RECS, fps=25.0, chunking=CHUNKING)
    keys = s3_bucket.keys()
    assert "a/b.zarr/zarr.json" in keys
    # 64 frames in shards of 32 frames: 2 video shard objects, each a whole shard
    video_shards = [k for k in keys if k.startswith("a/b.zarr/video/c/")]
    assert len(video_shards) == 2
    root_doc = json.loads(s3_bucket.server.filesystem().cat(f"{s3_bucket.name}/a/b.zarr/zarr.json"))
    assert root_doc["attributes"][schema.ATTR_STORE]["complete"] is True
    # explicit options and options from the environment reach the same store
    _assert_store_equals_recs(store.open_store(explicit))
    _assert_store_equals_recs(store.open_store(url))


def test_window_table_round_trip_at_url(location):
    store.write_store_from_arrays(location, RECS, fps=25.0, chunking=CHUNKING)
    rng = np.random.default_rng(5)
    cols = window_columns(3)
    table = rng.integers(0, 64, (300, len(cols))).astype(np.int64)
    wt = WindowTable(table=table, columns=cols, params={"frames": 3, "frame_step": 2, "current_rows": 4,
                                                        "current_seconds": 2, "policy": "strict", "stride": 1})
    write_window_table(store.open_store(location, "r+").root, "train", wt)
    back = store.open_store(location).window_table("train")
    np.testing.assert_array_equal(back.table, table)
    assert back.columns == cols and back.params == wt.params
    with pytest.raises(FmDataError, match="exists"):
        write_window_table(store.open_store(location, "r+").root, "train", wt)


def test_store_written_through_the_environment_is_read_by_another_process(s3_bucket):
    """A CLI or worker process gets the endpoint from FMF_S3_ENDPOINT alone."""
    url = s3_bucket.url("x.zarr")
    store.write_store_from_arrays(url, RECS, fps=25.0, chunking=CHUNKING)
    code = ("import sys, numpy as np; from fmdata import store; from fmdata.store import schema; "
            "r = store.open_store(sys.argv[1]); print(int(r[schema.VIDEO][:].astype(np.int64).sum()))")
    env = {**os.environ, **s3_bucket.env}
    env.pop("AWS_ENDPOINT_URL")
    out = subprocess.run([sys.executable, "-c", code, url], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(_expected()[schema.VIDEO].astype(np.int64).sum())


def _half_written(url: str, with_meta: bool) -> zarr.Group:
    root = Location.parse(url).open_group("w-")
    store.create_arrays(root, 64, 8, 8, 6, 2, CHUNKING)
    root[schema.VIDEO][:32] = _expected()[schema.VIDEO][:32]
    if with_meta:
        root.attrs[schema.ATTR_STORE] = schema.StoreMeta(64, 8, 2, 8, 6, 25.0, complete=False).to_dict()
    return root


@pytest.mark.parametrize("with_meta", [False, True])
def test_half_written_remote_store_never_looks_complete(s3_bucket, with_meta):
    url = s3_bucket.url("half.zarr")
    root = _half_written(url, with_meta)
    with pytest.raises(FmDataError, match="incomplete" if with_meta else "expected attribute"):
        store.open_store(url)
    if with_meta:  # the commit marker, written last, makes it visible
        store.set_complete(root, True)
        assert store.open_store(url).meta.complete


def test_remove_store_marks_incomplete_before_deleting(s3_bucket):
    url = s3_bucket.url("old.zarr")
    store.write_store_from_arrays(url, RECS, fps=25.0, chunking=CHUNKING)
    assert Location.parse(url).mark_incomplete()
    # a delete that stopped half-way leaves a store that readers refuse
    fs = s3_bucket.server.filesystem()
    for key in [k for k in s3_bucket.keys() if "/c/" in k][:3]:
        fs.rm(f"{s3_bucket.name}/{key}")
    with pytest.raises(FmDataError, match="incomplete"):
        store.open_store(url)
    Location.parse(url).remove()
    assert not Location.parse(url).exists()
    assert s3_bucket.keys() == []


def test_missing_remote_stores_give_one_clear_error(s3_bucket):
    with pytest.raises(FmDataError, match=r"s3://.*/nothing.zarr: expected a Zarr v3 group"):
        store.open_store(s3_bucket.url("nothing.zarr"))
    assert not Location.parse(s3_bucket.url("nothing.zarr")).exists()
    with pytest.raises(FmDataError, match="expected an existing bucket 'no-such-bucket'"):
        Location.parse("s3://no-such-bucket/x.zarr").check_writable_parent()
    Location.parse(s3_bucket.url("new.zarr")).check_writable_parent()
    with pytest.raises(FmDataError, match="memory://nowhere.zarr: expected a Zarr v3 group"):
        store.open_store("memory://nowhere.zarr")


def test_storage_options_precedence(monkeypatch):
    for k in ("FMF_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FMF_STORAGE_OPTIONS"):
        monkeypatch.delenv(k, raising=False)
    assert Location.parse("s3://b/x.zarr").storage_options == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert Location.parse("s3://b/x.zarr").storage_options == {"endpoint_url": "http://127.0.0.1:1"}
    monkeypatch.setenv("FMF_S3_ENDPOINT", "http://127.0.0.1:2")
    assert Location.parse("s3://b/x.zarr").storage_options == {"endpoint_url": "http://127.0.0.1:2"}
    assert Location.parse("gs://b/x.zarr").storage_options == {}  # S3 endpoints only for s3://
    monkeypatch.setenv("FMF_STORAGE_OPTIONS", '{"anon": true, "endpoint_url": "http://127.0.0.1:3"}')
    assert Location.parse("s3://b/x.zarr").storage_options == {"endpoint_url": "http://127.0.0.1:3", "anon": True}
    assert Location.parse("s3://b/x.zarr", {"anon": False}).storage_options == {
        "endpoint_url": "http://127.0.0.1:3", "anon": False}
    assert Location.parse("/local/x.zarr").storage_options == {}
    monkeypatch.setenv("FMF_STORAGE_OPTIONS", "[1, 2]")
    with pytest.raises(FmDataError, match="FMF_STORAGE_OPTIONS: expected a JSON object, got list"):
        Location.parse("s3://b/x.zarr")


def test_staging_and_publish(tmp_path, s3_bucket):
    final = tmp_path / "out.zarr"
    staging = Location.parse(final).staging()
    assert os.path.dirname(str(staging)) == str(tmp_path)
    assert os.path.basename(str(staging)).startswith(".out.zarr.partial-")
    store.write_store_from_arrays(staging, RECS, fps=25.0, chunking=CHUNKING)
    assert not final.exists()
    Location.parse(final).publish(staging)
    _assert_store_equals_recs(store.open_store(final))
    url = Location.parse(s3_bucket.url("inplace.zarr"))
    assert url.staging() == url
    with pytest.raises(FmDataError, match="written in place"):
        url.publish(Location.parse(str(url) + ".tmp"))
    assert str(url.join("windows", "a")) == str(url) + "/windows/a"
    assert Location.parse("S3://b/k").protocol == "s3" and Location.parse("/p").protocol == "file"


def _invoke(main, *args: str) -> str:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, f"{args[0]} failed: {result.output}"
    return result.output


def test_every_command_takes_an_s3_url(s3_bucket, tmp_path):
    """convert, verify, labels, windows, stats, preview, train, evaluate, predict on s3:// URLs."""
    pytest.importorskip("torch")
    from fmcli.fmdata_main import main as fmdata_main
    from fmcli.fmmodel_main import main as fmmodel_main
    from fmdata import synth

    src = synth.write_v1(tmp_path / "src.mat", frames=500, size=16, seed=4)
    url = s3_bucket.url("runs/s.zarr")
    assert "500 frames" in _invoke(fmdata_main, "convert", src, url, "--workers", "1", "--shard-frames", "128",
                                   "--no-progress")
    assert "OK" in _invoke(fmdata_main, "verify", url, "--workers", "1", "--no-progress")
    _invoke(fmdata_main, "labels", url)
    _invoke(fmdata_main, "windows", url, "--name", "w", "--frames", "4", "--frame-step", "2",
            "--current-seconds", "2", "--current-rows", "4", "--stride", "40")
    assert "windows 'w'" in _invoke(fmdata_main, "stats", url, "--windows", "w")
    root = store.open_store(url)
    assert root[schema.FRAME_LABEL].shape == (500,) and schema.ATTR_STATS in root.attrs
    frame = int(root.window_table("w").column("frame")[-1])
    _invoke(fmdata_main, "preview", url, "--windows", "w", "--frame", frame, "--out", tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000

    run = tmp_path / "run"
    _invoke(fmmodel_main, "train", "--store", url, "--windows", "w", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--device", "cpu", "--model-size", "tiny", "--max-steps", "2", "--out", run)
    assert (run / "last.pt").exists()
    _invoke(fmmodel_main, "evaluate", "--store", url, "--checkpoint", run / "last.pt", "--windows", "w",
            "--workers", "0", "--device", "cpu", "--out", tmp_path / "ev", "--no-progress")
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    n_test = int((root.window_table("w").column("split") == schema.SPLIT_TEST).sum())
    assert report["metrics"]["overall"]["class"]["n"] == n_test > 0
    pred = tmp_path / "pred.zarr"
    _invoke(fmmodel_main, "predict", "--store", url, "--checkpoint", run / "last.pt", "--windows", "w",
            "--workers", "0", "--device", "cpu", "--out", pred, "--no-progress")
    from fmmodel.scoring.predict import read_predictions

    assert read_predictions(str(pred))["frame"].shape == (len(root.window_table("w")),)


def test_missing_credentials_are_one_line_errors(s3_bucket, tmp_path):
    """A fresh CLI process without credentials: one line, exit 1, for a store and for an output."""
    from fmdata import synth

    store.write_store_from_arrays(s3_bucket.url("s.zarr"), RECS, fps=25.0, chunking=CHUNKING)
    src = synth.write_v1(tmp_path / "src.mat", frames=20, size=8, seed=1)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    code = "import sys; from fmcli.fmdata_main import main; main(sys.argv[1:], prog_name='fmdata')"
    for args in (["stats", s3_bucket.url("s.zarr")], ["convert", str(src), s3_bucket.url("new.zarr")]):
        r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"Error: {args[-1]}: expected a reachable {'store' if args[0] == 'stats' else 'location'}, "
            f"got NoCredentialsError: Unable to locate credentials"], r.stderr
