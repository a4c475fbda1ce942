"""The alarm policy and its state machine (fmmodel.scoring.alarms): smoothing, hysteresis, on-delay,
hold, dropouts; the batch function gives exactly the streaming events."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import AlarmPolicy, AlarmState, alarm_events, alarm_spans, smooth_scores

from builders import score_stream

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)


def streamed(times, scores, policy, frames=None):
    """The events of feeding ``policy``'s state machine one decision at a time."""
    state, out = AlarmState(policy), []
    for i, (t, s) in enumerate(zip(times, scores)):
        out += state.update(float(t), float(s), frame=None if frames is None else int(frames[i]))
    return out


def kinds(events):
    return [(e.kind, e.time) for e in events]


def test_policy_round_trips_through_json_and_names_the_bad_parameter():
    policy = AlarmPolicy(raise_threshold=0.7, clear_threshold=0.3, smoothing="k_of_n", k=3, n=5, on_delay=1.5,
                         hold=4.0)
    assert AlarmPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert AlarmPolicy.from_dict({"smoothing": "ema", "half_life": 2}) == AlarmPolicy(smoothing="ema", half_life=2.0)
    bad = [({"clear_threshold": 0.6}, "clear_threshold", "clear threshold <= the raise threshold 0.5"),
           ({"smoothing": "median"}, "smoothing", "smoothing in"),
           ({"k": 4, "n": 3}, "k", "1 <= k <= n = 3"),
           ({"n": 0}, "n", "n >= 1"),
           ({"k": True}, "k", "whole number"),
           ({"half_life": 0.0}, "half_life", "half-life > 0"),
           ({"on_delay": -1.0}, "on_delay", ">= 0"),
           ({"hold": math.inf}, "hold", "finite"),
           ({"raise_threshold": math.nan}, "raise_threshold", "finite number"),
           ({"raise_treshold": 0.6}, "raise_treshold", "keys among")]
    for kw, field, words in bad:
        with pytest.raises(FmModelError) as err:
            AlarmPolicy.from_dict(kw)
        assert err.value.field == field and words in str(err.value) and "got" in str(err.value), kw


def test_plain_threshold_raises_once_per_run_and_reports_the_peak_on_clear():
    t = np.arange(8.0)
    s = [0.1, 0.2, 0.9, 0.95, 0.3, 0.6, 0.1, 0.1]
    events = alarm_events(t, s, AlarmPolicy(), frames=np.arange(8) * 12)
    assert kinds(events) == [("raise", 2.0), ("clear", 4.0), ("raise", 5.0), ("clear", 6.0)]
    first_clear = events[1]
    assert (first_clear.peak_score, first_clear.peak_time, first_clear.raised_at) == (0.95, 3.0, 2.0)
    assert first_clear.duration == 2.0 and events[0].duration is None
    assert [e.frame for e in events] == [24, 48, 60, 72] and [e.alarm for e in events] == [0, 0, 1, 1]
    assert events == streamed(t, s, AlarmPolicy(), frames=np.arange(8) * 12)
    assert json.loads(json.dumps([e.to_dict() for e in events]))[1]["peak_score"] == 0.95


def test_on_delay_needs_the_condition_held_and_a_short_spike_raises_nothing():
    policy = AlarmPolicy(on_delay=1.0)
    t = np.arange(0.0, 10.0, 0.5)
    s = np.full(t.size, 0.1)
    s[(t >= 2.0) & (t < 2.5)] = 0.9  # one decision: shorter than the on-delay
    s[(t >= 5.0) & (t < 8.0)] = 0.9
    events = alarm_events(t, s, policy)
    assert kinds(events) == [("raise", 6.0), ("clear", 8.0)]
    s[6.0 == t] = 0.2  # one dip restarts the wait: raised 1 s after the dip
    assert kinds(alarm_events(t, s, policy)) == [("raise", 7.5), ("clear", 8.0)]


def test_hold_keeps_the_alarm_through_a_short_dip_and_hysteresis_through_a_sag():
    t = np.arange(0.0, 20.0, 0.5)
    s = np.full(t.size, 0.1)
    s[(t >= 2) & (t < 12)] = 0.9
    s[(t >= 6) & (t < 7)] = 0.2  # a 1 s dip
    assert kinds(alarm_events(t, s, AlarmPolicy())) == [("raise", 2.0), ("clear", 6.0), ("raise", 7.0),
                                                        ("clear", 12.0)]
    held = alarm_events(t, s, AlarmPolicy(hold=1.5))
    assert kinds(held) == [("raise", 2.0), ("clear", 13.5)]
    sag = s.copy()
    sag[(t >= 6) & (t < 7)] = 0.45  # below the raise threshold, above the clear threshold
    assert kinds(alarm_events(t, sag, AlarmPolicy(raise_threshold=0.5, clear_threshold=0.4))) == [
        ("raise", 2.0), ("clear", 12.0)]
    assert len(alarm_events(t, sag, AlarmPolicy())) == 4


def test_k_of_n_votes_and_isolated_spikes_never_raise():
    t = np.arange(30.0)
    s = np.full(30, 0.1)
    s[[3, 9, 15]] = 0.99  # isolated spikes
    s[[20, 22]] = 0.8  # two of three
    policy = AlarmPolicy(smoothing="k_of_n", k=2, n=3)
    events = alarm_events(t, s, policy)
    assert kinds(events) == [("raise", 22.0), ("clear", 23.0)]
    v = smooth_scores(t, s, policy)  # the 2nd largest of the last 3
    assert v[0] == -np.inf and v[1] == 0.1 and v[21] == 0.1 and v[22] == 0.8 and v[23] == 0.1
    # the vote can clear on a high score: the peak covers every decision from the raise to the clear
    policy = AlarmPolicy(smoothing="k_of_n", k=2, n=3, hold=1.0)
    events = alarm_events(np.arange(6.0), [0.9, 0.9, 0.1, 0.1, 0.99, 0.1], policy)
    assert kinds(events) == [("raise", 1.0), ("clear", 4.0)] and events[1].score == 0.99
    assert (events[1].peak_score, events[1].peak_time, events[1].smoothed) == (0.99, 4.0, 0.1)
    assert events == streamed(np.arange(6.0), [0.9, 0.9, 0.1, 0.1, 0.99, 0.1], policy)


def test_ema_weighs_by_time_so_irregular_and_skipped_decisions_agree():
    policy = AlarmPolicy(smoothing="ema", half_life=2.0)
    rng = np.random.default_rng(0)
    t = np.concatenate([[0.0], np.sort(rng.uniform(0.1, 20.0, 60))])  # irregular
    s = (t > 0).astype(float)  # a step from 0 to 1 after the first decision
    v = smooth_scores(t, s, policy)
    assert np.allclose(v, 1.0 - 2.0 ** (-t / 2.0), rtol=0, atol=1e-12)
    crossing = alarm_events(t, s, policy)[0].time
    assert crossing == t[np.argmax(t >= 2.0)]  # the first decision after one half-life


def test_dropouts_change_nothing_and_do_not_restart_an_on_delay():
    t = np.arange(0.0, 10.0, 0.5)
    s = np.where(t >= 3.0, 0.95, 0.05)
    dropped = s.copy()
    dropped[(t > 3.0) & (t < 4.5)] = np.nan  # the stream drops out during the on-delay
    assert kinds(alarm_events(t, dropped, AlarmPolicy(on_delay=2.0))) == [("raise", 5.0)]
    assert kinds(alarm_events(t, s, AlarmPolicy(on_delay=2.0))) == [("raise", 5.0)]
    policy = AlarmPolicy(on_delay=2.0, smoothing="ema", half_life=0.5)
    state = AlarmState(policy)
    for ti, si in zip(t[:8], dropped[:8]):
        state.update(ti, si)
    before = (state.smoothed, state.active)
    assert state.update(4.0, math.nan) == [] and (state.smoothed, state.active) == before


def test_decision_times_must_increase_and_scores_be_finite_or_nan():
    state = AlarmState(AlarmPolicy())
    state.update(1.0, 0.2)
    for t, s, field in [(1.0, 0.2, "t"), (0.5, 0.2, "t"), (math.nan, 0.2, "t"), (2.0, math.inf, "score"),
                        (2.0, True, "score")]:
        with pytest.raises(FmModelError) as err:
            state.update(t, s)
        assert err.value.field == field and "expected" in str(err.value)
    for times, scores, field in [([0, 1, 1], [0, 0, 0], "times"), ([0, 2, 1], [0, 0, 0], "times"),
                                 ([0, 1], [0.0], "scores"), ([0, 1], [0.0, -math.inf], "scores")]:
        with pytest.raises(FmModelError) as err:
            alarm_events(times, scores, AlarmPolicy())
        assert err.value.field == field
    with pytest.raises(FmModelError) as err:
        alarm_events([0, 1], [0.1, 0.2], AlarmPolicy(), frames=[0.5, 1.5])
    assert err.value.field == "frames"


def test_a_furnace_stream_gives_one_alarm_per_hot_spot_once_smoothed():
    """Noisy scores with dropouts and a flame flare: plain thresholding chatters, a 3-of-5 vote
    with hysteresis and a hold gives one alarm per hot spot, raised within seconds."""
    hot = [(100.0, 160.0), (300.0, 330.0), (520.0, 600.0)]
    t, s = score_stream(700.0, hot, seed=3, noise=0.9, skip=0.05, dropout=0.05)
    plain = alarm_events(t, s, AlarmPolicy())
    policy = AlarmPolicy(smoothing="k_of_n", k=3, n=5, raise_threshold=0.6, clear_threshold=0.4, hold=3.0)
    smoothed = alarm_events(t, s, policy)
    spans = alarm_spans(smoothed, end=700.0)
    assert len(spans) == len(hot) < len(alarm_spans(plain, end=700.0))
    for (start, stop), (on, off) in zip(spans, hot):
        assert on <= start < on + 5.0 and off <= stop < off + 10.0
    assert smoothed == streamed(t, s, policy)


def test_alarm_spans_refuse_events_out_of_order_and_close_an_open_alarm():
    events = alarm_events([0.0, 1.0, 2.0, 3.0], [0.9, 0.1, 0.9, 0.9], AlarmPolicy())
    assert alarm_spans(events, end=10.0) == [(0.0, 1.0), (2.0, 10.0)]
    with pytest.raises(FmModelError) as err:
        alarm_spans([events[0], events[2]], end=10.0)
    assert err.value.field == "alarms" and "alternating" in str(err.value)


policies = st.builds(
    lambda raise_, gap, smoothing, kn, half_life, on_delay, hold: AlarmPolicy(
        raise_threshold=raise_, clear_threshold=raise_ - gap, smoothing=smoothing, k=min(kn), n=max(kn),
        half_life=half_life, on_delay=on_delay, hold=hold),
    st.floats(0.2, 0.9), st.sampled_from([0.0, 0.0, 0.1, 0.3]), st.sampled_from(["none", "k_of_n", "ema"]),
    st.tuples(st.integers(1, 5), st.integers(1, 5)), st.sampled_from([0.3, 1.0, 4.0]),
    st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5]), st.sampled_from([0.0, 0.0, 0.5, 2.0]))


@st.composite
def streams(draw):
    """Irregular decision times (some far apart: skipped decisions); scores in runs of one level
    (long enough to outlast on-delays and holds) or single decisions, and NaNs (dropouts)."""
    count = draw(st.integers(0, 30))
    runs = draw(st.lists(st.tuples(st.sampled_from([0.05, 0.35, 0.5, 0.55, 0.8, 0.97, math.nan]),
                                   st.sampled_from([1, 1, 2, 3, 6, 10])), min_size=count, max_size=count))
    levels = np.repeat([v for v, _ in runs], [k for _, k in runs]).astype(float)
    gaps = draw(st.lists(st.sampled_from([0.25, 0.5, 0.5, 0.5, 0.7, 3.0]), min_size=levels.size,
                         max_size=levels.size))
    return np.cumsum(np.asarray(gaps, dtype=float)), levels


@PROPERTY
@given(policies, streams())
def test_batch_events_equal_streaming_events(policy, stream):
    t, s = stream
    frames = np.arange(t.size) * 7
    assert alarm_events(t, s, policy, frames=frames) == streamed(t, s, policy, frames=frames)


@PROPERTY
@given(policies, streams())
def test_alarms_follow_the_policy(policy, stream):
    """Every raise had the smoothed score at or above the raise threshold for the whole on-delay;
    every clear had it below the clear threshold for the whole hold; raises and clears alternate;
    and a stream whose smoothed score stays under the clear threshold raises nothing."""
    t, s = stream
    v = smooth_scores(t, s, policy)
    scored = ~np.isnan(s)
    events = alarm_events(t, s, policy)
    assert [e.kind for e in events] == ["raise", "clear"] * (len(events) // 2) + ["raise"] * (len(events) % 2)
    for e in events:
        window = scored & (t >= e.time - (policy.on_delay if e.kind == "raise" else policy.hold)) & (t <= e.time)
        if e.kind == "raise":
            assert (v[window] >= policy.raise_threshold).all()
        else:
            assert (v[window] < policy.clear_threshold).all()
            alarm = scored & (t >= e.raised_at) & (t <= e.time)
            assert e.peak_score == s[alarm].max() and e.peak_time == t[alarm][np.argmax(s[alarm])]
    low = np.where(scored, np.minimum(s, policy.clear_threshold - 0.01), np.nan)
    assert (smooth_scores(t, low, policy)[scored] < policy.clear_threshold).all()
    assert alarm_events(t, low, policy) == []
