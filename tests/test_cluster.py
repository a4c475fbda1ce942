"""The derivations on a real distributed.LocalCluster (2 worker processes) equal the local run."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from fmdata.compute import dask_cluster as cluster
from fmdata.derive import compute_labels, compute_stats, make_windows
from fmdata.errors import FmDataError
from fmdata.store import WindowParams, open_store, schema

from builders import recording, write_store


def test_labels_windows_stats_on_a_local_cluster_equal_the_threaded_run(tmp_path, capfd):
    recs = [recording("v1", 130, 1), recording("v2", 110, 2, lead=12)]
    local = write_store(tmp_path / "local.zarr", recs)
    dist = str(tmp_path / "dist.zarr")
    shutil.copytree(local, dist)
    params = WindowParams(frames=4, frame_step=6, current_seconds=8, current_rows=16, policy="strict")
    quiet = cluster.DaskOptions(progress=False)
    compute_labels(local, options=quiet)
    make_windows(local, "s", params, options=quiet)
    want = compute_stats(local, windows="s", options=quiet).to_dict()

    with cluster.dask_runner(cluster.DaskOptions(workers=2, memory_limit="400MiB")) as runner:
        assert runner.client is not None and runner.n_workers == 2
        workers = runner.client.scheduler_info()["workers"].values()
        assert all(w["nthreads"] == 1 for w in workers)
        on_cluster = cluster.DaskOptions(scheduler=runner.client.scheduler.address, progress=True)
        out = compute_labels(dist, options=on_cluster).to_dict()
        assert out["status"] == "computed" and out["scheduler"].startswith("scheduler tcp://")
        make_windows(dist, "s", params, options=on_cluster)
        got = compute_stats(dist, windows="s", options=on_cluster).to_dict()
    assert "labels: 100%" in capfd.readouterr().err  # the futures-driven progress bar ran to the end

    a, b = open_store(local), open_store(dist)
    for name in schema.DERIVED_FRAME_ARRAYS:
        np.testing.assert_array_equal(a[name][:], b[name][:])
    np.testing.assert_array_equal(a.window_table("s").table, b.window_table("s").table)
    assert got["normalization"]["scheduler"].startswith("scheduler tcp://")
    for key in ("video_mean", "video_std", "current_mean", "current_std", "current_min", "current_max"):
        np.testing.assert_allclose(got["normalization"][key], want["normalization"][key], rtol=1e-12)
    assert got["splits"] == want["splits"] and got["windows"] == want["windows"]


def test_options_are_checked():
    with pytest.raises(FmDataError, match="either local workers or a scheduler address") as err:
        cluster.DaskOptions(workers=2, scheduler="tcp://127.0.0.1:8786")
    assert err.value.field == "scheduler"
    with pytest.raises(FmDataError, match="at least 1 worker") as err:
        cluster.DaskOptions(workers=0)
    assert err.value.field == "workers"


def test_an_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(FmDataError, match="tcp://127.0.0.1:9: expected a reachable dask scheduler"):
        with cluster.dask_runner(cluster.DaskOptions(scheduler="tcp://127.0.0.1:9", connect_timeout="1s")):
            pass


def test_local_runner_reports_progress_and_task_errors(capfd):
    from dask import delayed

    def boom(x):
        raise FmDataError(f"block {x}: expected good data, got bad")

    with cluster.dask_runner() as runner:
        assert runner.client is None
        assert runner.compute([delayed(lambda x: x * 2)(i) for i in range(5)], desc="double", weights=[2] * 5) == \
            [0, 2, 4, 6, 8]
        with pytest.raises(FmDataError, match="block 3: expected good data"):
            runner.compute([delayed(boom)(3)], desc="boom")
    assert "double: 100%" in capfd.readouterr().err
