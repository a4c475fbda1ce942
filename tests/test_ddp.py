"""DDP on the CPU: two gloo processes train to identical weights and evaluate without duplicates."""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fmmodel.model.registry import build_model
from fmmodel.runs.train import train
from fmmodel.runtime import distributed as dd
from fmmodel.scoring.evaluate import evaluate

from builders import cached_store
from runs import quick_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, store: str, run: str, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # one process group for both commands (torchrun would start one process per command instead)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    res = train(quick_config(store, run, epochs=1, max_steps_per_epoch=3, batch_size=8), progress=False)
    torch.save(res.model.state_dict(), os.path.join(results, f"weights{rank}.pt"))
    report = evaluate(store, os.path.join(run, "last.pt"), workers=0, device="cpu", progress=False)
    with open(os.path.join(results, f"eval{rank}.json"), "w") as fh:
        json.dump({"metrics": report["metrics"], "windows": report["windows"]["count"],
                   "world_size": report["world_size"]}, fh)
    train(quick_config(store, run + "-seg", task="seg", epochs=1, max_steps_per_epoch=2, batch_size=8),
                progress=False)
    report = evaluate(store, os.path.join(run + "-seg", "last.pt"), workers=0, device="cpu", progress=False)
    with open(os.path.join(results, f"seg{rank}.json"), "w") as fh:
        json.dump(report["metrics"]["overall"], fh)
    torch.distributed.destroy_process_group()
    with open(os.path.join(results, f"threads{rank}.json"), "w") as fh:  # what would run into interpreter shutdown
        json.dump(sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")), fh)


def _spawn(fn, world: int, args: tuple, timeout: float = 240.0) -> None:
    ctx = mp.start_processes(fn, args=(world, *args), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP processes did not finish within {timeout:.0f} s")


def test_two_gloo_ranks_train_identical_weights_and_score_each_window_once(tmp_path_factory, tmp_path):
    store = cached_store(tmp_path_factory)
    results = tmp_path / "results"
    results.mkdir()
    run = tmp_path / "run"
    _spawn(_rank_main, 2, (_free_port(), store, str(run), str(results)))
    w0 = torch.load(results / "weights0.pt", weights_only=True)
    w1 = torch.load(results / "weights1.pt", weights_only=True)
    init = quick_config(store, str(tmp_path / "unused"))
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=f"ranks differ in {k}")
    # the run folder was written once, by rank 0, and says it ran on two processes
    cfg = json.load(open(run / "config.json"))
    assert cfg["runtime"]["world_size"] == 2
    torch.manual_seed(init.seed)

    fresh = build_model("vicu_cls", size="tiny", **{k: v for k, v in init.model.items() if k != "size"},
                        frames=10, image_size=(32, 32), current_rows=32).state_dict()
    changed = sum(not torch.equal(fresh[k], w0[k]) for k in w0 if k in fresh)
    assert changed > 0
    # evaluation: both ranks agree, every test window is scored exactly once, and the result
    # equals a single-process evaluation of the same checkpoint
    e0 = json.load(open(results / "eval0.json"))
    e1 = json.load(open(results / "eval1.json"))
    assert e0 == e1 and e0["world_size"] == 2
    single = evaluate(store, str(run / "last.pt"), workers=0, device="cpu", progress=False)
    assert e0["windows"] == single["windows"]["count"]
    assert e0["metrics"]["overall"]["class"]["n"] == single["metrics"]["overall"]["class"]["n"]
    assert e0["metrics"]["overall"]["class"]["confusion"] == single["metrics"]["overall"]["class"]["confusion"]
    for key in ("accuracy", "f1", "auroc", "ap"):
        a, b = e0["metrics"]["overall"]["class"][key], single["metrics"]["overall"]["class"][key]
        assert a == pytest.approx(b, rel=1e-6), key
    # pixel states summed over the ranks equal one process's (no pixel counted twice or lost)
    s0, s1 = json.load(open(results / "seg0.json")), json.load(open(results / "seg1.json"))
    seg_single = evaluate(store, str(tmp_path / "run-seg" / "last.pt"), workers=0, device="cpu",
                          progress=False)["metrics"]["overall"]
    assert s0 == s1
    assert s0["pixel"]["confusion"] == seg_single["pixel"]["confusion"]
    assert s0["pixel"]["auroc"] == pytest.approx(seg_single["pixel"]["auroc"], rel=1e-6)
    assert s0["class"]["confusion"] == seg_single["class"]["confusion"]
    # destroy_process_group ended the group's threads (gloo's, and rank 0's TCPStore server) on both ranks: none
    # runs into interpreter shutdown, where their teardown in no set order could abort a rank
    for rank in (0, 1):
        threads = json.load(open(results / f"threads{rank}.json"))
        assert not [t for t in threads if "gloo" in t or "tcpstore" in t], (rank, threads)


def test_shard_sampler_and_gather_have_no_duplicates():
    n, world = 103, 3
    shards = [list(dd.ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(sum(shards, [])) == list(range(n))
    assert [len(s) for s in shards] == [len(dd.ShardSampler(n, r, world)) for r in range(world)]
    single = dd.DistContext()
    arr = np.arange(5)
    assert dd.all_gather_array(single, arr) is arr
