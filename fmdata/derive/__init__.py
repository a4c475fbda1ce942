"""The derive layer: what training needs, computed from a complete store with Dask.

Frame labels (:mod:`~fmdata.derive.labels`), window tables (:mod:`~fmdata.derive.windows`),
statistics and normalisation (:mod:`~fmdata.derive.stats`) and pictures of windows
(:mod:`~fmdata.derive.preview`, imported where it is used: it brings OpenCV and matplotlib, which
the Dask workers that import this package never need). Each command returns a report dataclass with ``summary()`` (or
``table()``) and ``to_dict()``.
"""
from fmdata.derive.labels import LabelsReport, compute_labels, ensure_labels, labels_up_to_date, read_labels
from fmdata.derive.stats import StatsReport, compute_stats
from fmdata.derive.windows import FrameIndex, WindowsReport, build_window_table, load_index, make_windows

__all__ = ["LabelsReport", "compute_labels", "ensure_labels", "labels_up_to_date", "read_labels",
           "StatsReport", "compute_stats", "FrameIndex", "WindowsReport", "build_window_table",
           "load_index", "make_windows"]
