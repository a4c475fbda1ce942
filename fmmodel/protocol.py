"""The reference protocol's constants, in one place (docs/reference-protocol.md, "Protocol").

The authors' training recipe (batch 64, Adam, lr 5e-4 times 0.1 at epoch 20, 30 epochs,
cross-entropy, horizontal flip) and the vocabulary the toolkit's commands share: modalities,
tasks, splits to score, devices, precisions, data paths. The decision threshold lives with the
metrics (:mod:`fmmodel.scoring.metrics`). The reference windows (10 frames step 18 and 120 s of current
as 240 rows; video-only 8 frames step 19) are data facts and live with the window tables, in
:mod:`fmdata.store.window_table`.
"""
from __future__ import annotations

MODALITIES = ("both", "video", "current")
TASKS = ("cls", "seg")
SPLITS = ("test", "train", "all")  # which windows evaluate / predict score ("all": train and test)
# what a model is fed (fmmodel.data.preprocessing): the authors' raw inputs, or training-split statistics
PREPROCESSING_REFERENCE = "reference"
PREPROCESSING_NORMALIZED = "normalized"
PREPROCESSINGS = (PREPROCESSING_REFERENCE, PREPROCESSING_NORMALIZED)
# the frame orientation a model is fed (each preprocessing delivers one; checkpoints record it)
ORIENTATION_REFERENCE = "reference"  # frames transposed: item axes (..., W, H), as the authors' loader
ORIENTATION_TRUE = "true"  # item axes (..., H, W)
ORIENTATIONS = (ORIENTATION_REFERENCE, ORIENTATION_TRUE)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("bf16", "fp32")
OPTIMIZERS = ("adam", "adamw", "sgd")
# How evaluate counts samples and pixel metrics (docs/reference-protocol.md, "Metrics"; docs/training.md):
# toolkit: every test frame is a sample with its own label; mIoU and mean pixel accuracy average the
# classes that occur (a class absent from target and prediction is left out).
# reference: the authors' test scripts: a current-only model scores one sample per distinct test
# second (abnormal when any of CURRENT_SECOND_FRAMES frames from that second's first is); pixel
# metrics add PIXEL_EPS to every denominator, so an absent class scores 0 and stays in the means.
EVAL_PROTOCOLS = ("toolkit", "reference")
CURRENT_SECOND_FRAMES = 25
PIXEL_EPS = 1e-5
DATA_PATHS = ("auto", "resident", "lazy")  # how batches are made (fmmodel.data.paths)

# the authors' training recipe
EPOCHS = 30
BATCH_SIZE = 64
LR = 5e-4
LR_STEP_EPOCH = 20
LR_GAMMA = 0.1
OPTIMIZER = "adam"  # not published; a public third-party training script uses Adam
HFLIP = True

# the toolkit's choices where the authors published none
VAL_FRACTION = 0.1  # tail of each recording's training block held out for validation
