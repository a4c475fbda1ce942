"""``fmmodel evaluate``: score a checkpoint on a store's test split (class and pixel level).

Loads a toolkit checkpoint (or the authors' state_dict with ``format="reference"``), builds the
windows its metadata names (or reads a stored table), runs the model over the chosen split
(:func:`fmmodel.scoring.inference.run_inference`) and reports, overall and per recording, the metrics of
:mod:`fmmodel.scoring.metrics` plus throughput (FPS = windows / wall time of the whole loop, data loading
included, as the reference test script measures it; ``model_fps`` counts model time only).
Under ``torchrun`` every rank scores its own share and rank 0 writes the report. A checkpoint of a
run folder with a model card (``best.pt``, ``last.pt``) adds its test figures to the card
(:func:`fmmodel.scoring.card.record_evaluation`).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fmdata.store import schema
from fmdata.store.handle import StoreHandle, StoreLike
from fmdata.store.location import Location
from fmdata.store.outputs import check_apart
from fmmodel.errors import FmModelError
from fmmodel.model.fmformer import count_parameters
from fmmodel.protocol import ORIENTATION_REFERENCE
from fmmodel.runtime import distributed as dd
from fmmodel.runtime.precision import autocast
from fmmodel.scoring.alarms import WATCH_EVERY, AlarmPolicy
from fmmodel.scoring.card import record_evaluation
from fmmodel.scoring.config import EvaluateConfig
from fmmodel.scoring.inference import Inference, inference_precision, model_inputs, prepare, run_inference
from fmmodel.scoring.metrics import THRESHOLD, predicted_abnormal, probabilities, summary_line
from fmmodel.scoring.offline_alarms import FrameTable, alarms_of_windows
from fmmodel.scoring.report import Example, choose_examples, plain_params, write_report


def _examples(p: Inference, records: dict[str, np.ndarray], k: int, device: torch.device,
              precision: str) -> list[Example]:
    """Pick up to ``k`` telling windows (hits, misses, false alarms, correct normals; from different
    stretches of the recordings: :func:`fmmodel.scoring.report.choose_examples`) and render them."""
    if k <= 0 or not len(records["key"]):
        return []
    ds = p.dataset
    labelled = np.asarray(ds.labelled_frames, dtype=np.int64)
    order = np.argsort(labelled, kind="stable")
    keys = np.asarray(records["key"], dtype=np.int64)
    at = np.minimum(np.searchsorted(labelled[order], keys), len(order) - 1)
    found = labelled[order][at] == keys  # every scored key is a window of the dataset
    rows = np.flatnonzero(found)
    items = order[at[rows]]
    frame_offsets = p.store.frame_offsets
    rec = np.asarray(ds.recording_ids, dtype=np.int64)[items]
    window = p.params
    span = max(1, (int(window.get("frames", 1)) - 1) * int(window.get("frame_step", 1)) + 1)
    picked = choose_examples(records["prob"][rows], records["target"][rows], rec, keys[rows] - frame_offsets[rec],
                             k=k, min_gap=span)
    idx = [int(items[j]) for j in picked]  # dataset rows of the chosen windows
    pred_masks: list[np.ndarray | None] = [None] * len(idx)
    if p.task == "seg" and idx:
        batch = ds.__getitems__(idx).tensors
        model = p.model
        with torch.no_grad(), autocast(device, precision):
            logits = model(**model_inputs(model, batch, device)).float()
        masks = predicted_abnormal(probabilities(logits)).to(torch.uint8).cpu().numpy()
        if ds.orientation == ORIENTATION_REFERENCE:
            masks = np.swapaxes(masks, 1, 2)  # back to the store's (H, W)
        pred_masks = list(masks)
    root, names = p.store.root, p.store.recording_names
    out = []
    for n, j in enumerate(picked):
        f, r = int(keys[rows[j]]), int(rec[j])
        first = int(frame_offsets[r])
        seconds = float(root[schema.FRAME_TIME][f]) - float(root[schema.FRAME_TIME][first])
        out.append(Example(image=np.asarray(root[schema.VIDEO][f]), true_mask=np.asarray(root[schema.MASK][f]),
                           pred_mask=pred_masks[n], prob=float(records["prob"][rows[j]]),
                           label=int(records["target"][rows[j]]), recording=names[r] if r < len(names) else str(r),
                           frame=f - first, seconds=seconds))
    return out


_SAMPLES = {"toolkit": "one per test window (every test frame), labelled by its frame",
            "reference": "one per distinct test second of each recording (the authors' current-only "
                         "protocol), abnormal when any of the 25 frames from that second's first frame is"}
_MIOU = {"toolkit": "dataset-wide 2x2 confusion matrix, mean over the classes that occur in target or prediction",
         "reference": "dataset-wide 2x2 confusion matrix, mean over both classes, denominators + 1e-5 (the "
                      "authors' rule: a class absent from target and prediction scores 0)"}


def evaluate(store: StoreLike, checkpoint: str, config: EvaluateConfig | None = None, *, progress: bool = True,
             alarms: AlarmPolicy | None = None, alarm_every: float = WATCH_EVERY, **options: Any) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``store`` (an open store or its location, opened once); return the
    report dict (and write it under ``out``).

    The settings are ``config`` (:class:`fmmodel.scoring.config.EvaluateConfig`; its defaults when
    None) with ``options`` (its fields by name: ``workers=0``...) changed; an unknown name is an
    FmModelError naming it. ``fmt``: "auto", "toolkit" or "reference" (the authors' state_dict;
    ``variant`` names it when its keys are ambiguous). ``protocol`` says how samples and pixel
    metrics are counted (``fmmodel.protocol.EVAL_PROTOCOLS``; docs/training.md): "toolkit" (every
    test frame its own sample; mIoU over the classes that occur) or "reference" (the authors' test
    scripts: a current-only model scores one sample per distinct test second; mIoU keeps a class
    absent from target and prediction as 0); None (default): "reference" for a checkpoint read in
    the authors' format, else "toolkit". ``data`` ("auto", "resident", "lazy") and
    ``resident_budget`` (bytes) choose the data path (:mod:`fmmodel.data.paths`). ``trusted`` names
    users' models whose factory the checkpoint may import. ``progress`` shows bars. The report
    holds metrics overall and per recording, FPS (the scoring loop; a resident load is timed apart,
    under ``data``), the protocol, what was evaluated, the data path, and (with ``out``) the paths
    of report.json and the pictures. With ``alarms`` (a policy) it also holds, under "alarms", the
    windows' scores judged as an operator would
    (:func:`fmmodel.scoring.offline_alarms.alarms_of_windows`: decisions every ``alarm_every``
    seconds, alarms under the policy, scored as events against the frame labels).
    """
    cfg = (config or EvaluateConfig()).replace(**options)
    store = store if isinstance(store, StoreHandle) else Location.parse(store)  # parsed once, opened in prepare
    location = store.location if isinstance(store, StoreHandle) else store
    out = cfg.out
    if out:  # before the scoring, not after it
        check_apart(out, [location], field="out")
        if os.path.exists(out) and not os.path.isdir(out):
            raise FmModelError("expected a folder for the report, got a file", out, field="out")
    ctx = dd.setup(cfg.device)
    try:
        p = prepare(store, checkpoint, fmt=cfg.fmt, variant=cfg.variant, split=cfg.split, windows=cfg.windows,
                    ctx=ctx, batch_size=cfg.batch_size, workers=cfg.workers, data=cfg.data,
                    resident_budget=cfg.resident_budget, progress=progress, protocol=cfg.protocol,
                    trusted=cfg.trusted, precision=cfg.precision)
        prec = inference_precision(p.model, cfg.precision, ctx.device)
        res = run_inference(p.model, p.loader, ctx, task=p.task, precision=prec,
                            recordings=p.store.meta.n_recordings, progress=progress, pixel_rule=p.protocol)
        names = p.store.recording_names
        metrics = res["metrics"]
        for rid, entry in metrics["recordings"].items():
            entry["name"] = names[int(rid)] if int(rid) < len(names) else str(rid)
        meta = p.meta
        report = {
            "store": str(location), "checkpoint": os.fspath(checkpoint), "format": meta.info.get("format", "toolkit"),
            "variant": meta.variant, "parameters": count_parameters(p.model), "task": p.task, "modality": p.modality,
            "split": cfg.split,
            "orientation": meta.orientation, "preprocessing": meta.preprocessing.get("name"),
            "protocol": p.protocol,
            "windows": {"name": cfg.windows, "count": res["windows"],
                        "params": plain_params(p.params)},
            "device": str(ctx.device), "world_size": ctx.world_size, "precision": prec,
            "fps": res["fps"], "model_fps": res["model_fps"], "seconds": res["seconds"], "data": p.data,
            "metrics": metrics,
            "conventions": {
                "probabilities": f"softmax of the two logits; abnormal when p > {THRESHOLD} (the argmax: a tie "
                                 "is normal)",
                "class_score_of_seg_models": "max pixel probability of the labelled frame",
                "auroc": "micro-averaged over all windows (class) / all pixels (pixel, binned)",
                "samples": _SAMPLES[p.protocol if p.modality == "current" else "toolkit"],
                "miou": _MIOU[p.protocol],
                "fdr": "FP/(FP+TN)", "mdr": "FN/(TP+FN)",
                "fps": "windows / wall time of the whole loop incl. data loading",
            },
        }
        if alarms is not None:
            table = FrameTable.read(p.store)
            run = alarms_of_windows(table, res["records"]["key"], res["records"]["prob"], policy=alarms,
                                    every=alarm_every)
            report["alarms"] = run.to_dict()
        if out and ctx.is_main:
            ex = _examples(p, res["records"], cfg.examples, ctx.device, prec)
            report["files"] = write_report(out, report, res["class_curves"], res["pixel_curves"], ex)
        report["summary"] = summary_line(metrics["overall"])
        if ctx.is_main and meta.info.get("format", "toolkit") == "toolkit":  # a run's checkpoint: its card
            said = record_evaluation(os.fspath(checkpoint), report, epoch=meta.info.get("epoch"))
            if said:
                dd.log(ctx, said)
        dd.barrier(ctx)
        return report
    finally:
        dd.teardown(ctx)
