"""Choosing ``fmmodel watch``'s default alarm policy by measurement (docs/online.md, "Choosing the defaults").

1. Score: every recording of ``--store`` (recordings the checkpoint never saw) is replayed by
   ``fmmodel watch`` at ``--speed max`` with a decision every ``--every`` seconds; every decision's
   score is kept (the same decisions a live watch makes, online equals offline).
2. Sweep: each policy of a grid (smoothing, thresholds, on-delay, hold) is applied to those score
   streams with :func:`fmmodel.scoring.alarms.alarm_events` (event for event what the live state
   machine does) and judged against the frame labels as events (:func:`fmmodel.scoring.events.score_alarms`:
   recall, delay after onset, false alarms per hour of normal time, chatter, NAB).
3. Choose: among policies that never chatter (an alarm that clears and comes straight back
   within a minute on the same event: the nuisance operators learn to ignore, which NAB does not
   count), the best NAB score (standard profile: recall, earliness and false alarms in one
   figure); ties go to the shorter median delay, then to the simpler policy (listed first).

    .venv/bin/python benchmarks/alarm_policy.py --checkpoint demo-out/run/best.pt --store eval.zarr \\
        --out bench-out/alarms

Prints the plain-thresholding baseline, the ten best policies and the choice; writes
OUT/alarm_policy.json (every policy's figures) and OUT/timeline.png (the choice on the scores).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from typing import Any

import numpy as np

from fmdata.derive.labels import read_labels
from fmdata.store import open_store
from fmmodel.online import Sources, WatchSettings, watch
from fmmodel.scoring.alarms import WATCH_POLICY, AlarmPolicy, alarm_events
from fmmodel.scoring.events import labelled_events, score_alarms
from fmmodel.scoring.timeline import save_timeline

SMOOTHINGS = [dict(smoothing="none"), dict(smoothing="k_of_n", k=2, n=3), dict(smoothing="k_of_n", k=3, n=5),
              dict(smoothing="ema", half_life=0.5), dict(smoothing="ema", half_life=1.0),
              dict(smoothing="ema", half_life=2.0)]
RAISE = [0.5, 0.7, 0.9]
CLEAR_GAP = [0.0, 0.2, 0.4]  # clear threshold = raise threshold - this (hysteresis)
ON_DELAY = [0.0, 0.5, 1.0, 2.0, 3.0]
HOLD = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0]


def grid() -> list[AlarmPolicy]:
    out = []
    for smooth, up, gap, on, hold in itertools.product(SMOOTHINGS, RAISE, CLEAR_GAP, ON_DELAY, HOLD):
        if up - gap <= 0:
            continue
        out.append(AlarmPolicy(raise_threshold=up, clear_threshold=round(up - gap, 3), on_delay=on, hold=hold,
                               **smooth))  # type: ignore[arg-type]
    return out


def figures(policy: AlarmPolicy, streams: dict[int, tuple[np.ndarray, np.ndarray]], labelled: Any,
            names: dict[int, str]) -> dict[str, Any]:
    alarms = {r: alarm_events(t, s, policy) for r, (t, s) in streams.items()}
    score = score_alarms(alarms, labelled, names=names)
    o = score.overall
    missed = [e.offset_time - e.onset_time for e in score.outcomes if e.detected_at is None]
    return {"policy": policy.to_dict(), "recall": o.recall, "events": o.events, "detected": o.detected,
            "delay_median": o.delay("median"), "delay_p90": o.delay("p90"), "false_alarms": o.false_alarms,
            "false_alarms_per_hour": o.false_alarms_per_hour, "false_alarms_per_hour_upper95":
                o.false_alarms_per_hour_upper, "chatter": o.chatter, "re_raises": o.re_raises, "nab": o.nab(),
            "normal_hours": o.normal_seconds / 3600, "missed_durations_s": sorted(round(d, 2) for d in missed)}


def line(f: dict[str, Any]) -> str:
    p = f["policy"]
    smooth = p["smoothing"] + (f" {p['k']}/{p['n']}" if p["smoothing"] == "k_of_n" else
                               f" {p['half_life']:g}s" if p["smoothing"] == "ema" else "")
    num = lambda x, fmt: "-" if x is None else format(x, fmt)
    return (f"{smooth:12s} raise {p['raise_threshold']:.2f} clear {p['clear_threshold']:.2f} on-delay "
            f"{p['on_delay']:g} hold {p['hold']:g}: {f['detected']}/{f['events']} events, delay median "
            f"{num(f['delay_median'], '.2f')} s p90 {num(f['delay_p90'], '.2f')} s, false alarms {f['false_alarms']} "
            f"({num(f['false_alarms_per_hour'], '.2f')}/h, 95% <= {num(f['false_alarms_per_hour_upper95'], '.2f')}/h), "
            f"chatter {f['chatter']}, NAB {num(f['nab'], '.1f')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--store", required=True, help="recordings the checkpoint never saw (all of each is scored)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--model", action="append", default=[], help="a user's model the checkpoint may import")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    store = open_store(args.store)  # opened once: every replay below reads through this handle
    names = dict(enumerate(store.recording_names))
    f_off, _ = store.offsets
    label, _ = read_labels(store)
    frame_time = np.asarray(store.column("frame_time"))
    recording = np.repeat(np.arange(len(names)), np.diff(f_off))
    labelled = labelled_events(label, frame_time, recording)
    streams: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    t0 = time.perf_counter()
    for r in names:
        report = watch(args.checkpoint, Sources(replay=store, recording=str(r), speed=None),
                       WatchSettings(every=args.every, threads=1, metrics_every=0.0, policy=AlarmPolicy()),
                       trusted=args.model, keep_decisions=True)
        streams[r] = (np.array([d.time for d in report.decisions]), np.array([d.score for d in report.decisions]))
    decisions = sum(len(t) for t, _ in streams.values())
    print(f"scored {decisions:,} decisions of {len(names)} recordings ({len(labelled)} events) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    baseline = figures(AlarmPolicy(), streams, labelled, names)
    current = figures(WATCH_POLICY, streams, labelled, names)
    rows = [figures(p, streams, labelled, names) for p in grid()]
    ok = [f for f in rows if f["chatter"] == 0 and f["nab"] is not None]
    ok.sort(key=lambda f: (-round(f["nab"], 6), f["delay_median"] if f["delay_median"] is not None else 1e9))
    choice = ok[0]
    best = max(rows, key=lambda f: f["nab"] if f["nab"] is not None else -1e9)
    print("plain thresholding at 0.5 (AlarmPolicy()):\n  " + line(baseline))
    print("WATCH_POLICY now:\n  " + line(current))
    print("the best NAB of all, chatter or not:\n  " + line(best))
    print(f"the ten best of {len(rows)} policies without chatter ({len(ok)}), by NAB:")
    for f in ok[:10]:
        print("  " + line(f))
    print("choice:\n  " + line(choice))
    print(f"  missed events last (s): {choice['missed_durations_s']}; plain thresholding misses "
          f"{baseline['missed_durations_s']}")
    with open(os.path.join(args.out, "alarm_policy.json"), "w") as fh:
        json.dump({"store": args.store, "checkpoint": args.checkpoint, "every": args.every, "decisions": decisions,
                   "baseline": baseline, "watch_policy": current, "choice": choice, "policies": rows}, fh, indent=1)
    chosen = AlarmPolicy(**choice["policy"])
    alarms = {r: alarm_events(t, sc, chosen) for r, (t, sc) in streams.items()}
    first = next(iter(streams))
    save_timeline(os.path.join(args.out, "timeline.png"), decisions={first: streams[first]}, policy=chosen,
                  alarms={first: alarms[first]}, labelled=labelled,
                  report=score_alarms({first: alarms[first]}, labelled, names=names), model=args.checkpoint)

if __name__ == "__main__":
    main()
