"""Alarms scored as events (fmmodel.scoring.events) and their timeline (fmmodel.scoring.timeline)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread
from scipy.stats import poisson

from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import AlarmEvent, AlarmPolicy, alarm_events
from fmmodel.scoring.events import (
    NAB_PROFILES,
    labelled_events,
    nab_sigmoid,
    poisson_upper_bound,
    score_alarms,
)
from fmmodel.scoring.timeline import save_timeline

from builders import score_stream

FPS = 25.0


def frame_labels(duration: float, events, fps: float = FPS):
    """Frame times and 0/1 labels of a recording of ``duration`` seconds with hot spots ``events``."""
    t = np.arange(int(round(duration * fps))) / fps
    label = np.zeros(t.size, np.uint8)
    for on, off in events:
        label[(t >= on) & (t < off)] = 1
    return t, label


def alarms_at(*spans):
    """Alarm events raised and cleared at the given (raise, clear) times (clear None: still raised)."""
    out = []
    for number, (up, down) in enumerate(spans):
        out.append(AlarmEvent("raise", up, number, 0.9, 0.9, up))
        if down is not None:
            out.append(AlarmEvent("clear", down, number, 0.1, 0.1, up, None, 0.9, up))
    return out


def test_labelled_events_follow_label_edges_and_never_join_across_recordings_or_gaps():
    t0, l0 = frame_labels(40.0, [(10.0, 20.0), (36.0, 40.0)])  # the last event runs to the end
    t1, l1 = frame_labels(20.0, [(0.0, 4.0)])  # the next recording starts abnormal
    ev = labelled_events(np.concatenate([l0, l1]), np.concatenate([t0, t1]),
                         np.repeat([0, 1], [t0.size, t1.size]).astype(np.int32))
    assert ev.recording.tolist() == [0, 0, 1]
    assert ev.onset_time.tolist() == [10.0, 36.0, 0.0] and np.allclose(ev.offset_time, [20.0, 40.0, 4.0])
    assert ev.onset_frame.tolist() == [250, 900, 1000] and ev.offset_frame.tolist() == [500, 1000, 1100]
    assert np.allclose(ev.extent[0], (0.0, 40.0)) and np.allclose(ev.extent[1], (0.0, 20.0))
    assert math.isclose(ev.normal_seconds[0], 26.0) and math.isclose(ev.normal_seconds[1], 16.0)
    # a subset with a gap in frame numbers (the test frames): the run is cut at the gap
    keep = np.r_[0:300, 400:1000]
    sub = labelled_events(l0[keep], t0[keep], np.zeros(keep.size, np.int64), frame=keep)
    assert sub.onset_frame.tolist() == [250, 400, 900] and sub.offset_frame.tolist() == [300, 500, 1000]
    assert sub.offset_time[0] == pytest.approx(12.0) and sub.onset_time[1] == 16.0
    json.dumps(sub.to_dict())


def test_labelled_events_refuse_bad_labels_lengths_and_time_going_back():
    t, lab = frame_labels(4.0, [(1.0, 2.0)])
    rec = np.zeros(t.size, np.int64)
    for args, field in [((np.where(lab, 2, 0), t, rec), "frame_label"), ((lab, t[:-1], rec), "frame_time"),
                        ((lab, t, rec.astype(float)), "recording"), ((lab, t[::-1], rec), "frame_time"),
                        ((lab, np.where(t > 3, np.nan, t), rec), "frame_time")]:
        with pytest.raises(FmModelError) as err:
            labelled_events(*args)
        assert err.value.field == field and "expected" in str(err.value)
    back = labelled_events(lab, np.concatenate([t[:50], t[50:] - 2.0]), np.repeat([0, 1], [50, t.size - 50]))
    assert back.extent[1][0] == pytest.approx(0.0)  # time restarts with the next recording: fine


def test_score_alarms_counts_detections_delays_false_alarms_and_chatter():
    t, lab = frame_labels(3600.0, [(100.0, 160.0), (1000.0, 1010.0), (2000.0, 2100.0)], fps=5.0)
    ev = labelled_events(lab, t, np.zeros(t.size, np.int64))
    alarms = alarms_at((103.0, 170.0),  # detects event 0 after 3 s
                       (175.0, 180.0),  # 5 s after event 0's window closed (170): a false alarm
                       (1015.0, 1016.0),  # 5 s after event 1 ended, inside its 10 s tolerance: detects it
                       (1017.0, 1018.0),  # event 1 again, 1 s after the clear: chatter
                       (2500.0, None))  # a false alarm still raised at the end
    report = score_alarms({0: alarms}, ev, names={0: "furnace A"})
    f = report.overall
    assert (f.events, f.detected, f.raises, f.false_alarms, f.re_raises, f.chatter) == (3, 2, 5, 2, 1, 1)
    assert f.delays == (3.0, 15.0) and f.recall == pytest.approx(2 / 3)
    assert (f.delay("median"), f.delay("max")) == (9.0, 15.0) and f.delay("p90") == pytest.approx(13.8)
    hours = (3600.0 - 170.0) / 3600.0
    assert f.normal_seconds == pytest.approx(3430.0)
    assert f.false_alarms_per_hour == pytest.approx(2 / hours)
    assert f.false_alarms_per_hour_upper == pytest.approx(poisson_upper_bound(2) / hours)
    assert [o.detected_at for o in report.outcomes] == [103.0, 1015.0, None]
    assert report.false_alarm_times == {0: (175.0, 2500.0)}
    assert "furnace A: 2/3 events detected" in report.summary()
    d = json.loads(json.dumps(report.to_dict()))
    assert d["per_recording"]["furnace A"]["chatter"] == 1 and d["events"][1]["delay"] == 15.0
    # a wider tolerance takes the 175 s raise into event 0's window, a re-raise 5 s after a clear
    wide = score_alarms({0: alarms}, ev, tolerance=20.0).overall
    assert (wide.false_alarms, wide.re_raises, wide.chatter) == (1, 2, 2)
    # only raises count: an alarm raised before the window and held through the event misses it
    early = alarms_at((95.0, 170.0))
    assert score_alarms({0: early}, ev).overall.detected == 0
    assert score_alarms({0: early}, ev, early=10.0).overall.delays == (-5.0,)


def test_a_raise_in_two_windows_belongs_to_the_event_in_progress():
    t, lab = frame_labels(300.0, [(100.0, 110.0), (115.0, 130.0)])
    ev = labelled_events(lab, t, np.zeros(t.size, np.int64))  # windows [100, 120) and [115, 140)
    report = score_alarms({0: alarms_at((112.0, 113.0), (116.0, 117.0))}, ev)
    assert [o.detected_at for o in report.outcomes] == [112.0, 116.0]
    report = score_alarms({0: alarms_at((116.0, 117.0))}, ev, early=5.0)  # windows [95, 120), [110, 140)
    assert [o.detected_at for o in report.outcomes] == [None, 116.0]
    report = score_alarms({0: alarms_at((96.0, 97.0))}, ev, early=20.0)  # not begun: the next to begin
    assert [o.detected_at for o in report.outcomes] == [96.0, None]


def test_score_alarms_refuses_unknown_recordings_and_bad_settings():
    t, lab = frame_labels(60.0, [(10.0, 20.0)])
    ev = labelled_events(lab, t, np.zeros(t.size, np.int64))
    with pytest.raises(FmModelError) as err:
        score_alarms({3: []}, ev)
    assert err.value.field == "alarms" and "recording 3" in str(err.value)
    for kw in ({"tolerance": -1.0}, {"early": math.nan}, {"chatter_seconds": math.inf}):
        with pytest.raises(FmModelError) as err:
            score_alarms({0: []}, ev, **kw)
        assert err.value.field == next(iter(kw))
    with pytest.raises(FmModelError) as err:
        score_alarms({0: alarms_at((1.0, 2.0))[1:]}, ev)
    assert "alternating" in str(err.value)


def test_poisson_bound_is_the_exact_one_sided_95_percent_bound():
    # the bound U is the Poisson mean under which k or fewer events have probability 5%
    for k in range(0, 40):
        u = poisson_upper_bound(k)
        assert poisson.cdf(k, u) == pytest.approx(0.05, abs=1e-9) and u > k
    assert poisson_upper_bound(0) == pytest.approx(-math.log(0.05))  # 2.996: "the rule of three"


def test_nab_score_follows_the_published_definition():
    # NAB's documented anchors of its scaled sigmoid
    assert [round(nab_sigmoid(y), 5) for y in (-1.0, -0.5, 0.0, 1.0)] == [0.98661, 0.84828, 0.0, -0.98661]
    assert nab_sigmoid(3.0) == -1.0 and nab_sigmoid(-10.0) == pytest.approx(1.0)
    assert NAB_PROFILES["standard"] == (1.0, 0.11, 1.0)
    t, lab = frame_labels(1000.0, [(100.0, 140.0), (500.0, 520.0)], fps=5.0)
    ev = labelled_events(lab, t, np.zeros(t.size, np.int64))
    nab = lambda alarms, profile="standard": score_alarms({0: alarms}, ev).overall.nab(profile)
    assert nab(alarms_at((100.0, 150.0), (500.0, 530.0))) == pytest.approx(100.0)  # perfect
    assert nab([]) == pytest.approx(0.0)  # null
    # one event missed, the other detected at its onset, one false alarm before any window
    a_tp, a_fp, a_fn = NAB_PROFILES["reward_low_FN_rate"]
    raw = a_tp - a_fn - a_fp
    assert nab(alarms_at((50.0, 60.0), (500.0, 530.0)), "reward_low_FN_rate") == pytest.approx(
        100 * (raw + 2 * a_fn) / (2 * a_tp + 2 * a_fn))
    # a late detection earns less; the window is [onset, offset + 10 s): 50 s wide for event 0
    late = alarms_at((125.0, 150.0), (500.0, 530.0))
    y = (125.0 - 150.0) / 50.0
    assert nab(late) == pytest.approx(100 * (nab_sigmoid(y) / nab_sigmoid(-1) + 1 + 2) / 4)
    # a false alarm just after a window costs less than one far from any window
    assert nab(alarms_at((100.0, 150.0), (151.0, 152.0))) > nab(alarms_at((100.0, 150.0), (400.0, 401.0)))
    assert nab(alarms_at((100.0, 150.0), (400.0, 401.0)), "reward_low_FP_rate") < nab(
        alarms_at((100.0, 150.0), (400.0, 401.0)))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(0, 900), st.floats(1, 80)), max_size=6),
       st.lists(st.tuples(st.floats(0, 990), st.floats(0.5, 40)), max_size=12),
       st.sampled_from([0.0, 5.0, 30.0]), st.sampled_from([0.0, 3.0]))
def test_every_raise_is_a_detection_a_re_raise_or_a_false_alarm(hot, spans, tolerance, early):
    t, lab = frame_labels(1000.0, [(on, on + d) for on, d in hot], fps=2.0)
    ev = labelled_events(lab, t, np.zeros(t.size, np.int64))
    times = np.sort(np.concatenate([[a, a + d] for a, d in spans]) if spans else np.zeros(0))
    alarms = alarms_at(*((float(times[i]), float(times[i + 1])) for i in range(0, times.size - 1, 2)
                         if times[i + 1] > times[i]))
    report = score_alarms({0: alarms}, ev, tolerance=tolerance, early=early)
    f = report.overall
    assert f.detected + f.re_raises + f.false_alarms == f.raises == sum(a.kind == "raise" for a in alarms)
    assert f.chatter <= f.re_raises and f.detected <= f.events == len(ev)
    for o in report.outcomes:
        assert o.detected_at is None or o.onset_time - early <= o.detected_at < o.offset_time + tolerance
    for x in report.false_alarm_times[0]:
        assert not ((ev.onset_time - early <= x) & (x < ev.offset_time + tolerance)).any()
    for profile in NAB_PROFILES:
        assert f.nab(profile) is None if not len(ev) else f.nab(profile) <= 100.0 + 1e-9


def two_furnace_recordings():
    """Two recordings at 25 fps, their hot spots, the model's decisions (noisy, with dropouts and
    a flame flare in the first) and the alarms of a smoothing policy."""
    plan = {0: (900.0, [(120.0, 200.0), (600.0, 640.0)], [(400.0, 408.0)]),
            1: (600.0, [(0.0, 30.0), (300.0, 420.0)], [])}
    times, labels, recs, decisions, alarms = [], [], [], {}, {}
    policy = AlarmPolicy(smoothing="k_of_n", k=3, n=5, raise_threshold=0.6, clear_threshold=0.4, hold=3.0)
    for r, (duration, hot, flares) in plan.items():
        t, lab = frame_labels(duration, hot)
        times.append(t), labels.append(lab), recs.append(np.full(t.size, r, np.int32))
        dt, score = score_stream(duration, hot, seed=10 + r, noise=0.9, skip=0.05, dropout=0.05, flares=flares)
        decisions[r] = (dt, score)
        alarms[r] = alarm_events(dt, score, policy, frames=np.round(dt * FPS).astype(np.int64))
    ev = labelled_events(np.concatenate(labels), np.concatenate(times), np.concatenate(recs))
    return plan, policy, decisions, alarms, ev


def test_a_furnace_day_is_scored_per_recording_and_overall(tmp_path):
    plan, policy, decisions, alarms, ev = two_furnace_recordings()
    report = score_alarms(alarms, ev, names={0: "furnace A", 1: "furnace B"})
    assert len(ev) == 4 and ev.recording.tolist() == [0, 0, 1, 1]  # recording 1's first event stands alone
    assert report.overall.recall == 1.0 and all(0.0 <= d <= 5.0 for d in report.overall.delays)
    assert report.per_recording[0].false_alarms == 1 and report.per_recording[1].false_alarms == 0
    assert report.false_alarm_times[0][0] == pytest.approx(401.0, abs=3.0)  # the flare
    assert report.overall.chatter == 0 and 80.0 < report.overall.nab() < 100.0
    normal = (900.0 - 120.0) + (600.0 - 150.0)
    assert report.overall.normal_seconds == pytest.approx(normal)
    assert report.overall.false_alarms_per_hour == pytest.approx(3600.0 / normal)
    png = save_timeline(tmp_path / "timeline.png", decisions=decisions, policy=policy, alarms=alarms, labelled=ev,
                        report=report, model="fmformer (test)", dpi=50)
    image = imread(png)
    assert image.shape == (int(50 * (1.2 + 2.7 * 2)), 50 * 14, 4) and image[..., :3].std() > 0.05
    with pytest.raises(FmModelError) as err:
        save_timeline(tmp_path / "bad.png", decisions={0: decisions[0]}, policy=policy, alarms=alarms, labelled=ev,
                      report=report, model="m")
    assert err.value.field == "decisions" and not (tmp_path / "bad.png").exists()
