"""Conversion as tasks on a real distributed.LocalCluster (2 worker processes), to disk and to S3.

Every store the cluster writes must equal a local conversion of the same sources element for
element (checksums included) and pass ``fmdata verify`` against the sources.
"""
from __future__ import annotations

import logging
import os

import dask
import numpy as np
import pytest

from fmdata import store, synth
from fmdata.convert import ClusterRunner, convert, convert_on_cluster, verify
from fmdata.convert.plan import plan_conversion
from fmdata.errors import FmDataError
from fmdata.sources import open_sources
from fmdata.store import Location, schema
from fmdata.store.checksums import read_checksums

from s3_server import DUMMY_ENV

SHARD = 32  # small shards: many units, several per worker
S3_SHARD = 128  # on S3 every shard is an HTTP request: fewer, still 5 units


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[str]:
    """Two V1 MAT files (MATLAB-like chunking) and a V2 folder with two recordings."""
    d = tmp_path_factory.mktemp("src")
    a = synth.write_v1(d / "a.mat", frames=230, size=(20, 24), seed=1)
    b = synth.write_v1(d / "b.mat", frames=101, size=(20, 24), seed=2, index=1)
    v2 = synth.write_v2(d / "v2", recordings=2, frames=90, size=(20, 24), seed=3)
    return [str(a), str(b), str(v2)]


@pytest.fixture(scope="module")
def client():
    """A real cluster: 2 single-threaded worker processes that hold S3 credentials but no endpoint."""
    from distributed import Client, LocalCluster

    saved = {k: os.environ.pop(k) for k in ("FMF_S3_ENDPOINT", "AWS_ENDPOINT_URL") if k in os.environ}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):  # see docs/scaling.md
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               memory_limit="500MiB", silence_logs=logging.ERROR, env=dict(DUMMY_ENV))
    os.environ.update(saved)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def local_stores(sources, tmp_path_factory) -> dict[int, str]:
    """The baseline: local conversions (one process) with the shard lengths the tests use."""
    out = {}
    for shard in (SHARD, S3_SHARD):
        out[shard] = str(tmp_path_factory.mktemp("local") / f"local{shard}.zarr")
        convert(sources, out[shard], workers=1, shard_frames=shard, progress=False)
    return out


def _assert_same_store(got_location: str, want_location: str) -> None:
    got, want = store.open_store(got_location), store.open_store(want_location)
    assert got.meta == want.meta
    assert got.recordings == want.recordings
    for name in schema.SOURCE_ARRAYS:
        np.testing.assert_array_equal(got[name][:], want[name][:], err_msg=name)
        assert read_checksums(got[name]) == read_checksums(want[name]), name
        assert read_checksums(got[name]) is not None, name


def test_cluster_conversion_equals_local_and_verifies(sources, client, local_stores, tmp_path, capfd):
    out = str(tmp_path / "dist.zarr")
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        report = convert_on_cluster(sources, out, client, shard_frames=SHARD, progress=True)
    assert report.workers == 2 and report.units_resumed == 0 and report.units > 4
    assert "convert: 100%" in capfd.readouterr().err
    unit_tasks = [t for t in stream.data if str(t["key"]).startswith("fmf-unit-")]
    assert len(unit_tasks) == report.units  # every unit ran as a task on the cluster ...
    assert len({t["worker"] for t in unit_tasks}) == 2  # ... and both workers took some
    _assert_same_store(out, local_stores[SHARD])
    result = verify(out, sources, workers=1, progress=False)
    assert result.ok and result.compared_with_sources, result.summary()


class _LosesConnection(ClusterRunner):
    """Fault injection: the link to the cluster breaks after ``after`` results were handed over."""

    def __init__(self, client, after: int) -> None:
        super().__init__(client)
        self.after = after

    def __call__(self, fn, args, on_result):
        seen = []

        def counted(res):
            if len(seen) == self.after:
                raise ConnectionError("scheduler connection lost (injected)")
            seen.append(res.key)
            on_result(res)

        super().__call__(fn, args, counted)


@pytest.mark.parametrize("where", ["disk", "s3"])
def test_interrupted_cluster_conversion_resumes_without_redoing_units(sources, client, local_stores, tmp_path,
                                                                      where, request):
    """Into S3 too: the workers hold no endpoint; the client resolves the options and sends them."""
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    out = str(tmp_path / "r.zarr") if bucket is None else bucket.url("sets/r.zarr")
    shard = SHARD if where == "disk" else S3_SHARD
    target = Location.parse(out)  # resolved here, on the client: the workers get its options with every task
    with pytest.raises(FmDataError, match="finished units are kept.*--resume"):
        convert(sources, target, workers=2, shard_frames=shard, progress=False,
                runner=_LosesConnection(client, after=3))
    with pytest.raises(FmDataError, match="incomplete|expected an FMF Zarr store"):
        store.open_store(out)  # nothing that looks complete is left behind
    report = convert_on_cluster(sources, out, client, resume=True, shard_frames=shard, progress=False)
    assert report.units_resumed == 3 and report.units > 3
    _assert_same_store(out, local_stores[shard])  # every element and every recorded checksum
    if bucket is not None:
        keys = bucket.keys()
        assert any(k.startswith("sets/r.zarr/video/c/") for k in keys)
        assert not any("fmf_convert_ledger" in k for k in keys)  # the ledger is gone once complete


def test_workers_that_cannot_see_the_store_or_sources_are_one_clear_error(sources, client, tmp_path):
    with pytest.raises(FmDataError, match=r"worker tcp://127\.0\.0\.1:\d+: memory://.*expected the store"):
        convert_on_cluster(sources, "memory://fmf/cluster.zarr", client, shard_frames=SHARD, progress=False)
    # a source that differs on the workers from what the client planned with
    copy = tmp_path / "a.mat"
    copy.write_bytes(open(sources[0], "rb").read())
    plan = plan_conversion(open_sources([str(copy)]), store.Chunking(1, SHARD))
    with open(copy, "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(FmDataError, match=rf"{copy}: expected \d+ bytes as on the client, got \d+"):
        ClusterRunner(client).check_visibility([(u, Location.parse(tmp_path / "x.zarr")) for u in plan.units])


def test_an_unreachable_scheduler_is_one_clear_error(sources, tmp_path):
    with pytest.raises(FmDataError, match="tcp://127.0.0.1:9: expected a reachable dask scheduler"):
        convert_on_cluster(sources, str(tmp_path / "x.zarr"), "tcp://127.0.0.1:9", progress=False,
                           connect_timeout="1s")
    assert not os.path.exists(tmp_path / "x.zarr")


def test_bad_data_found_by_a_worker_is_one_clear_error_and_leaves_nothing(sources, client, tmp_path):
    """A mask value of 2 deep in a file (found only while streaming): no store, no stray shards."""
    import glob
    import time

    import h5py

    bad = tmp_path / "bad.mat"
    bad.write_bytes(open(sources[0], "rb").read())
    with h5py.File(bad, "r+") as f:  # MATLAB layout: label is (N, W, H) in h5py
        f["label"][200, 3, 3] = 2
    out = tmp_path / "out.zarr"
    with pytest.raises(FmDataError, match=rf"{bad}: expected 'label' values 0 or 1, got 2 at frame 200"):
        convert_on_cluster([sources[1], sources[2], str(bad)], str(out), client, shard_frames=SHARD,
                           progress=False)
    time.sleep(0.5)  # any unit still running would have written by now
    assert not out.exists() and not glob.glob(str(tmp_path / ".out.zarr.partial-*"))


def test_the_convert_command_runs_on_a_scheduler_address(sources, client, local_stores, tmp_path):
    from click.testing import CliRunner

    from fmcli.fmdata_main import main

    out = str(tmp_path / "cli.zarr")
    address = client.scheduler.address
    result = CliRunner().invoke(main, ["convert", *sources, out, "--scheduler", address,
                                       "--shard-frames", str(SHARD), "--no-progress"])
    assert result.exit_code == 0, result.output
    _assert_same_store(out, local_stores[SHARD])
    both = CliRunner().invoke(main, ["convert", *sources, str(tmp_path / "x.zarr"), "--scheduler", address,
                                     "--workers", "2"])
    assert both.exit_code == 2 and "got both" in both.output
    assert not os.path.exists(tmp_path / "x.zarr")
