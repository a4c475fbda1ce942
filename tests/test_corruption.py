"""Corruption is caught on every read, not only by ``fmdata verify``; derived data is checked too.

Bytes are flipped in real shard files and real shards are deleted from stores that ``fmdata
convert`` wrote; the commands that read them (``stats``, ``labels``, ``windows``, ``train``,
``evaluate``, ``predict``) must stop with one line naming the array and frames and exit 1.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from fmcli.fmdata_main import main as fmdata_main
from fmcli.fmmodel_main import main as fmmodel_main
from fmdata import store, synth
from fmdata.convert import convert, verify
from fmdata.derive import compute_labels, compute_stats, make_windows
from fmdata.errors import FmDataError
from fmdata.store import Chunking, WindowParams, schema
from fmdata.store.block_reader import BlockReader
from fmdata.store.row_reader import LocalAxisReader
from fmdata.store.shards import ShardLayout, decode_index
from fmdata.store.window_table import write_window_table
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.errors import FmModelError
from fmmodel.runs.train import train

from builders import clip_window_table, recording
from processes import FMDATA, FMMODEL, one_line, run
from runs import quick_config

SHARD = 64
WINDOWS = WindowParams(frames=4, frame_step=5, current_seconds=2.0, current_rows=8, stride=4)
TRAIN_FRAME, TEST_FRAME = 200, 714  # frames 0..639 are the training split, 640..799 the test split


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, str]:
    """A converted store (800 frames of 16x16, shards of 64) with labels, windows "w", statistics, and a
    checkpoint trained on it; returns (store, checkpoint)."""
    d = tmp_path_factory.mktemp("corruption")
    src = synth.write_v1(d / "src.mat", frames=800, size=16, seed=4)
    path = d / "good.zarr"
    convert([str(src)], path, workers=1, shard_frames=SHARD, progress=False)
    compute_stats(str(path))
    make_windows(str(path), "w", WINDOWS)
    run_dir = d / "run"
    train(quick_config(str(path), str(run_dir), windows="w", preprocessing="reference"), progress=False)
    return path, str(run_dir / "last.pt")


def copy(pristine, tmp_path: Path, name: str = "s.zarr") -> Path:
    return Path(shutil.copytree(pristine[0], tmp_path / name))


def flip_chunk(path: Path, array: str, frame: int) -> None:
    """Flip one byte in the middle of the encoded inner chunk that holds ``frame`` (its shard's
    index, and so the shard's layout, stay intact)."""
    shard = path / array / "c" / str(frame // SHARD) / "0" / "0"
    shard = shard if array == schema.MASK else shard / "0"
    data = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(data[-(SHARD * 16 + 4):-4]), "<u8").reshape(SHARD, 2)
    off, size = (int(v) for v in index[frame % SHARD])
    assert off != 2**64 - 1, f"frame {frame} of {array} is an empty chunk"
    data[off + size // 2] ^= 0x5A
    shard.write_bytes(bytes(data))


def refused(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    line = one_line(result.output)
    for f in fragments:
        assert f in line, line
    return line


def test_a_pristine_store_verifies_derived_data_included(pristine):
    report = verify(pristine[0], workers=1, progress=False)
    assert report.ok and not report.notes, report.summary()
    root = store.open_store(pristine[0])
    assert root.attrs[schema.ATTR_STATS]["checksum"] and schema.ATTR_CHECKSUMS in root[schema.FRAME_LABEL].attrs
    assert schema.ATTR_CHECKSUMS in root[schema.WINDOWS_GROUP]["w"].attrs
    # every chunk carries its CRC-32C (format 2), which stock zarr checks too
    assert root.meta.version == schema.FORMAT_VERSION == 2
    for name in (schema.VIDEO, schema.CURRENT, schema.FRAME_LABEL):
        codecs = json.loads((pristine[0] / name / "zarr.json").read_text())["codecs"]
        inner = codecs[0]["configuration"]["codecs"] if codecs[0]["name"] == "sharding_indexed" else codecs
        assert inner[-1]["name"] == "crc32c", (name, inner)


# ---- item 5: every read is checked -------------------------------------------------------------------
def test_a_flipped_byte_in_a_video_shard_stops_stats_and_train_naming_the_frame(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    flip_chunk(path, schema.VIDEO, TRAIN_FRAME)
    stats = run([FMDATA, "stats", path, "--force", "--no-progress"])
    assert stats.returncode == 1
    line = one_line(stats.stderr)
    assert f"video frame {TRAIN_FRAME}: expected chunk bytes matching their stored CRC-32C, got a mismatch" in line
    assert "fmdata verify" in line
    trained = CliRunner().invoke(fmmodel_main, [
        "train", "--store", str(path), "--windows", "w", "--epochs", "1", "--workers", "0", "--device", "cpu",
        "--model-size", "tiny", "--batch-size", "64", "--out", str(tmp_path / "run"), "--no-progress"])
    refused(trained, f"video frame {TRAIN_FRAME}: expected chunk bytes matching their stored CRC-32C")
    bad = verify(path, workers=1, progress=False)
    assert [(p.array, p.kind) for p in bad.problems] == [(schema.VIDEO, "unreadable")]


def test_a_flipped_byte_stops_evaluate_and_predict_naming_the_frame(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    flip_chunk(path, schema.VIDEO, TEST_FRAME)
    common = ["--store", str(path), "--checkpoint", pristine[1], "--workers", "0", "--device", "cpu", "--no-progress"]
    evaluated = CliRunner().invoke(fmmodel_main, ["evaluate", *common])
    refused(evaluated, f"video frame {TEST_FRAME}:", "CRC-32C")
    predicted = CliRunner().invoke(fmmodel_main, ["predict", *common, "--out", str(tmp_path / "p.zarr")])
    refused(predicted, f"video frame {TEST_FRAME}:", "CRC-32C")
    assert not (tmp_path / "p.zarr").exists()


def test_a_flipped_byte_in_a_mask_shard_stops_labels(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    root = store.open_store(path)
    frame = int(np.flatnonzero(root[schema.MASK][:].reshape(800, -1).max(axis=1))[0])  # a chunk that was written
    flip_chunk(path, schema.MASK, frame)
    result = run([FMDATA, "labels", path, "--force", "--no-progress"])
    assert result.returncode == 1 and f"mask frame {frame}: expected chunk bytes matching" in one_line(result.stderr)
    # the labels in place are the old, intact ones
    np.testing.assert_array_equal(store.open_store(path)[schema.FRAME_LABEL][:],
                                  store.open_store(pristine[0])[schema.FRAME_LABEL][:])


def test_a_deleted_shard_is_an_error_never_black_frames(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    (path / schema.VIDEO / "c" / "5" / "0" / "0" / "0").unlink()  # frames 320..383
    before = store.open_store(path).attrs[schema.ATTR_STATS]
    stats = run([FMDATA, "stats", path, "--force", "--no-progress"])
    assert stats.returncode == 1
    assert "video frames 320..383: expected the chunk file c/5/0/0/0, got none" in one_line(stats.stderr)
    assert store.open_store(path).attrs[schema.ATTR_STATS] == before  # no mean computed over black frames
    ds = FmfWindowDataset(path, "w")
    with pytest.raises(FmModelError, match="video frames 320..383: expected the chunk file"):
        ds.__getitems__(np.arange(len(ds)))
    # a mask shard that held only zeros reads back as zeros: the same data, so no error
    root = store.open_store(path)
    assert not root[schema.MASK][:SHARD].any()
    (path / schema.MASK / "c" / "0" / "0" / "0").unlink()
    np.testing.assert_array_equal(BlockReader(store.open_store(path)[schema.MASK]).read(0, SHARD), 0)


# ---- issue 16, moderate 3: a shard cut short is damage like any other ---------------------------------
INDEX_BYTES = SHARD * 16 + 4  # a shard's index (an offset and a size per inner chunk) and its CRC-32C
CUTS = {"to-zero": lambda n: 0, "mid-index": lambda n: n - INDEX_BYTES // 2, "mid-chunk": lambda n: n // 2}


def cut_shard(path: Path, array: str, frame: int, cut: str) -> str:
    """Truncate the shard file holding ``frame`` of ``array`` as ``CUTS[cut]`` says; return its frames."""
    shard = path / array / "c" / str(frame // SHARD) / "0" / "0"
    shard = shard if array == schema.MASK else shard / "0"
    with open(shard, "r+b") as f:
        f.truncate(CUTS[cut](shard.stat().st_size))
    first = frame // SHARD * SHARD
    return f"{array} frames {first}..{first + SHARD - 1}: expected"


def error_line(stderr: str) -> str:
    """The one error line of a command whose stderr may start with the data path's "data: " line."""
    assert "Traceback" not in stderr and "Caught" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("data: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_a_cut_short_video_shard_stops_lazy_training_with_and_without_workers(pristine, tmp_path, cut):
    """The training reader (the row reader, in the main process and in DataLoader workers) names the
    frames of a shard cut short as it names a flipped byte's: never an OSError ("Invalid argument",
    or a worker's traceback). The installed command with a worker runs for the empty shard (the
    reader's message does not depend on where it runs; a process costs seconds)."""
    path = copy(pristine, tmp_path)
    frames = cut_shard(path, schema.VIDEO, TRAIN_FRAME, cut)
    args = ["train", "--store", str(path), "--windows", "w", "--epochs", "1", "--data", "lazy", "--device", "cpu",
            "--model-size", "tiny", "--batch-size", "64", "--no-progress"]
    in_process = CliRunner().invoke(fmmodel_main, [*args, "--workers", "0", "--out", str(tmp_path / "run0")])
    assert in_process.exit_code == 1, in_process.output
    line = error_line(in_process.output)
    assert frames in line and "(the store is damaged" in line, line
    if cut == "to-zero":
        with_workers = run([FMMODEL, *args, "--workers", "1", "--out", tmp_path / "run1"])
        assert with_workers.returncode == 1 and error_line(with_workers.stderr) == line, with_workers.stderr


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_a_cut_short_shard_stops_labels_and_stats_and_verify_reports_it(pristine, tmp_path, cut):
    """The block reader (labels, stats) names the frames of a shard cut short; verify reports the
    block as unreadable (an empty file is "cut short", not a checksum difference of the zeros zarr
    reads from it)."""
    path = copy(pristine, tmp_path)
    root = store.open_store(path)
    frame = int(np.flatnonzero(root[schema.MASK][:].reshape(800, -1).max(axis=1))[0])  # a shard holding data
    masks = cut_shard(path, schema.MASK, frame, cut)
    refused(CliRunner().invoke(fmdata_main, ["labels", str(path), "--force", "--no-progress"]), masks,
            "(the store is damaged")
    videos = cut_shard(path, schema.VIDEO, TRAIN_FRAME, cut)
    refused(CliRunner().invoke(fmdata_main, ["stats", str(path), "--force", "--no-progress"]), videos,
            "(the store is damaged")
    report = verify(path, workers=1, progress=False)
    found = {p.array: p for p in report.problems}
    assert sorted(found) == [schema.MASK, schema.VIDEO] and {p.kind for p in found.values()} == {"unreadable"}
    if cut == "to-zero":
        assert "c/3/0/0/0 is cut short: 0 bytes" in str(found[schema.VIDEO]), report.summary()


# ---- the source layout: MATLAB's chunks copied (chunks of 50 video and 200 mask frames) -------------
@pytest.fixture(scope="module")
def copied(pristine) -> Path:
    """The pristine store's source converted with --layout source, with statistics and windows "w"."""
    path = pristine[0].parent / "copied.zarr"
    if not path.exists():
        convert([str(pristine[0].parent / "src.mat")], path, workers=1, layout=schema.LAYOUT_SOURCE, shard_frames=SHARD,
                progress=False)  # shards of 200 frames: whole chunk rows of both arrays
        compute_stats(str(path))
        make_windows(str(path), "w", WINDOWS)
    return path


def flip_copied_chunk(path: Path, array: str, frame: int) -> tuple[int, int]:
    """Flip one byte in the middle of the copied chunk that holds ``frame``; return its first and last frame."""
    lay = ShardLayout.from_metadata(json.loads((path / array / "zarr.json").read_text()))
    shard = path / array / lay.chunk_key(frame // lay.outer_rows)
    data = bytearray(shard.read_bytes())
    index = decode_index(bytes(data[-lay.index_nbytes:]), lay, str(shard))
    off, size = (int(v) for v in index[(frame % lay.outer_rows) // lay.inner_rows * lay.per_row])
    data[off + size // 2] ^= 0x5A
    shard.write_bytes(bytes(data))
    first = frame // lay.inner_rows * lay.inner_rows
    return first, first + lay.inner_rows - 1


def test_a_flipped_byte_in_a_copied_chunk_is_caught_by_every_reader(copied, pristine, tmp_path):
    path = Path(shutil.copytree(copied, tmp_path / "s.zarr"))
    assert store.open_store(path).meta.layouts == {schema.VIDEO: "source", schema.MASK: "source"}
    a, b = flip_copied_chunk(path, schema.VIDEO, TRAIN_FRAME)
    stats = run([FMDATA, "stats", path, "--force", "--no-progress"])  # the block reader: the shard file's CRC-32C
    assert stats.returncode == 1
    assert "video frames 200..399: expected a shard file matching its stored CRC-32C" in one_line(stats.stderr)
    trained = CliRunner().invoke(fmmodel_main, [  # the row reader: the chunk's CRC-32C
        "train", "--store", str(path), "--windows", "w", "--epochs", "1", "--workers", "0", "--device", "cpu",
        "--data", "lazy", "--model-size", "tiny", "--batch-size", "64", "--out", str(tmp_path / "run"),
        "--no-progress"])
    assert trained.exit_code == 1, trained.output  # (after the line saying which data path runs)
    assert f"video frames {a}..{b}: expected chunk bytes matching their stored CRC-32C" in \
        trained.output.splitlines()[-1], trained.output
    flip_copied_chunk(path, schema.VIDEO, TEST_FRAME)
    evaluated = CliRunner().invoke(fmmodel_main, ["evaluate", "--store", str(path), "--checkpoint", pristine[1],
                                                  "--workers", "0", "--device", "cpu", "--no-progress"])
    refused(evaluated, "video frames 600..799: expected a shard file matching its stored CRC-32C")  # resident
    with pytest.raises(ValueError):  # stock zarr checks the crc32c codec
        zarr.open_group(path, mode="r")[schema.VIDEO][TRAIN_FRAME]
    m0, _ = flip_copied_chunk(path, schema.MASK, 0)
    labels = run([FMDATA, "labels", path, "--force", "--no-progress"])
    assert labels.returncode == 1 and "mask frames 0..199: expected a shard file" in one_line(labels.stderr)
    report = verify(path, workers=1, progress=False)  # without sources: checksums, chunk CRC-32Cs, zarr decodes
    assert {(p.array, p.kind, p.start) for p in report.problems} >= {
        (schema.VIDEO, "checksum", 200), (schema.VIDEO, "unreadable", 200), (schema.VIDEO, "checksum", 600),
        (schema.MASK, "checksum", 0), (schema.MASK, "unreadable", 0)}, report.summary()
    report = verify(path, [str(pristine[0].parent / "src.mat")], workers=1, progress=False)
    assert f"video frames 200..399: 1 of 4 copied chunk(s) differ from the source's (first at frame {a})" in \
        report.summary(), report.summary()


def test_a_deleted_copied_shard_is_an_error_for_every_reader(copied, tmp_path):
    path = Path(shutil.copytree(copied, tmp_path / "s.zarr"))
    (path / schema.MASK / "c" / "0" / "0" / "0").unlink()  # frames 0..199, whose masks are all zero
    stats = run([FMDATA, "labels", path, "--force", "--no-progress"])
    assert stats.returncode == 1
    assert "mask frames 0..199: expected the chunk file c/0/0/0, got none" in one_line(stats.stderr)
    with pytest.raises(FmDataError, match="mask frames 0..199: expected the chunk file c/0/0/0, got none"):
        LocalAxisReader(str(path / schema.MASK)).take(np.array([5]))
    report = verify(path, workers=1, progress=False)
    assert [str(p) for p in report.problems] == ["mask frames 0..199: expected the chunk file c/0/0/0, got none"]


def test_stores_of_format_1_are_checked_where_whole_blocks_are_read(tmp_path):
    recs = [recording("v1", 150, 1), recording("v1", 90, 2)]
    path = tmp_path / "v1.zarr"
    root = store.write_store_from_arrays(path, recs, fps=25.0, chunking=Chunking(1, 16, 64), format_version=1)
    write_window_table(root, "w", clip_window_table(recs, frames=4, step=3, current_rows=8, current_span=50))
    assert store.open_store(path).meta.version == 1
    ds = FmfWindowDataset(path, "w")
    assert len(ds.__getitems__(np.arange(len(ds))).tensors["label"]) == len(ds)  # intact: reads fine
    # a current chunk is a whole write block: its decoded values are checked against the recorded CRC
    chunk = path / schema.CURRENT / "c" / "1" / "0"
    intact = chunk.read_bytes()
    data = bytearray(intact)
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))
    with pytest.raises(FmModelError, match="current samples 64..127: expected"):
        FmfWindowDataset(path, "w").__getitems__(np.arange(len(ds)))
    chunk.write_bytes(intact)  # stats reads the current too: one damage at a time
    # whole video blocks (stats, labels) are checked against the recorded CRC of their values
    shard = path / schema.VIDEO / "c" / "2" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x5A
    shard.write_bytes(bytes(data))
    stats = CliRunner().invoke(fmdata_main, ["stats", str(path), "--no-progress"])
    refused(stats, "video frames 32..47: expected")


# ---- item 6: derived data carries checksums, readers and verify check them -------------------------
def test_a_damaged_label_chunk_is_found_by_verify_and_readers(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    chunk = path / schema.FRAME_LABEL / "c" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))
    result = run([FMDATA, "verify", path, "--workers", "1", "--no-progress"])
    assert result.returncode == 1 and "frame_label frames 0..799: cannot be read" in result.stdout, result.stdout
    windows = CliRunner().invoke(fmdata_main, ["windows", str(path), "--name", "x", "--no-progress"])
    refused(windows, "frame_label frames 0..799: expected chunk bytes matching their stored CRC-32C")


def test_a_changed_window_table_and_statistics_are_found(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    table = zarr.open_array(path / schema.WINDOWS_GROUP / "w", mode="r+")  # a valid chunk, other values
    table[0, 3] = 1 - table[0, 3]
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"][schema.ATTR_STATS]["video_mean"][0] += 1.0
    (path / "zarr.json").write_text(json.dumps(meta))
    report = verify(path, workers=1, progress=False)
    assert sorted(str(p) for p in report.problems) == [
        "fmf_stats: checksum differs from the one recorded",
        f"windows/w windows 0..{table.shape[0] - 1}: checksum differs from the one recorded"]
    args = ["train", "--store", str(path), "--windows", "w", "--epochs", "1", "--max-steps", "1", "--workers", "0",
            "--device", "cpu", "--model-size", "tiny", "--out", str(tmp_path / "run"), "--no-progress"]
    refused(CliRunner().invoke(fmmodel_main, args), f"windows/w windows 0..{table.shape[0] - 1}: expected data "
                                                   "matching its stored CRC-32C")
    windows = ["--frames", "4", "--frame-step", "5", "--current-seconds", "2", "--current-rows", "8", "--stride", "4"]
    refused(CliRunner().invoke(fmmodel_main, [*args[:3], *args[5:], *windows, "--preprocessing", "normalized"]),
            "attribute fmf_stats: expected content matching its stored CRC-32C")
    refused(CliRunner().invoke(fmdata_main, ["stats", str(path), "--no-progress"]), "attribute fmf_stats")


def test_derived_data_written_before_checksums_is_noted_not_failed(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    label = zarr.open_array(path / schema.FRAME_LABEL, mode="r+")
    label.attrs.pop(schema.ATTR_CHECKSUMS)
    report = verify(path, workers=1, progress=False)
    assert report.ok and report.notes == ["frame_label: no checksums recorded (written before store format 2; "
                                          "not checked)"]
    assert "note: frame_label" in report.summary()
    assert compute_labels(str(path)).status == "up to date"  # readers accept it, unchecked


def test_a_store_with_damaged_offsets_is_one_line(pristine, tmp_path):
    path = copy(pristine, tmp_path)
    offsets = zarr.open_array(path / schema.RECORDING_FRAME_OFFSETS, mode="r+")
    offsets[1] = 700  # a valid chunk, other values: only the recorded checksum tells
    with pytest.raises(FmDataError, match="recording_frame_offsets recording_edges 0..1: expected data matching"):
        store.read_offsets(store.open_store(path).root)


def test_verify_reports_a_damaged_or_missing_offsets_chunk(pristine, tmp_path):
    """A flipped byte in the offsets' chunk is reported (exit 1), not an "unexpected ValueError"; a
    deleted one is a missing chunk file, not a checksum difference of the zeros zarr reads instead."""
    path = copy(pristine, tmp_path)
    chunk = path / schema.RECORDING_FRAME_OFFSETS / "c" / "0"
    intact = chunk.read_bytes()
    data = bytearray(intact)
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))
    result = run([FMDATA, "verify", path, "--no-progress"])
    assert result.returncode == 1 and "Traceback" not in result.stderr and not result.stderr.strip(), result.stderr
    assert "recording_frame_offsets recording_edges 0..1: cannot be read (" in result.stdout, result.stdout
    chunk.unlink()
    report = verify(path, workers=1, progress=False)
    assert [str(p) for p in report.problems] == [
        "recording_frame_offsets recording_edges 0..1: expected the chunk file c/0, got none"]
