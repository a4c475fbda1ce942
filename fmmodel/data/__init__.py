"""The torch data path over an FMF store: from a window table to batches on the device.

What a model is fed (:mod:`~fmmodel.data.preprocessing`: orientation, dtype, scaling); the lazy
dataset, one item per window table row (:mod:`~fmmodel.data.dataset`, batches packed by
:mod:`~fmmodel.data.batches`) and its samplers and loaders (:mod:`~fmmodel.data.sampling`); the
windows held on the device (:mod:`~fmmodel.data.resident`); which of the two feeds a command
(:mod:`~fmmodel.data.paths`); the windows of a run or a checkpoint (:mod:`~fmmodel.data.windows`);
validation hold-out (:mod:`~fmmodel.data.holdout`); the data path's speed alone
(:mod:`~fmmodel.data.throughput`, ``fmmodel bench-data``).
"""
from fmmodel.data.dataset import FmfWindowDataset, WindowBatch
from fmmodel.data.paths import BatchRequest, BatchSource, DataChoice, open_batches
from fmmodel.data.preprocessing import InputFormat, input_format
from fmmodel.data.resident import ResidentWindows
from fmmodel.data.sampling import make_loader, make_sampler
from fmmodel.data.throughput import DataPathReport, measure_data_path

__all__ = ["FmfWindowDataset", "WindowBatch", "BatchRequest", "BatchSource", "DataChoice", "open_batches",
           "InputFormat", "input_format", "ResidentWindows", "make_loader", "make_sampler", "DataPathReport",
           "measure_data_path"]
