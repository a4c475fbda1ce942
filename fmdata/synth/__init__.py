"""Synthetic FMF recordings in the users' exact file formats, and the MATLAB writer they need.

:func:`simulate` plans a recording (video, masks, current, split) that renders any frame range
on demand; :func:`synthesize` writes recordings as V1 MAT files or a V2 folder
(``fmdata synth``); :mod:`~fmdata.synth.matwriter` writes MAT files the way MATLAB does (also
used by the tests to make source files). docs/synthetic-data.md describes the simulation.
"""
from fmdata.synth.matwriter import MatWriter, write_mat73, write_v7
from fmdata.synth.simulation import EVENT_PROFILES, Recording, SynthConfig, simulate
from fmdata.synth.writers import SynthResult, synthesize, write_v1, write_v1_set, write_v2

__all__ = ["MatWriter", "write_mat73", "write_v7", "EVENT_PROFILES", "Recording", "SynthConfig",
           "simulate", "SynthResult", "synthesize", "write_v1", "write_v1_set", "write_v2"]
