"""Masks with values other than 0 and 1 (issue 11, item 14).

The benchmark's README says masks hold 0 and 1, and the toolkit refuses anything else by
default, naming the option that reads them as the authors' loader does (any value above 0 is
abnormal). With ``--mask-nonzero`` the store holds that mapping, records it in its provenance,
and ``verify --source`` reads the sources the same way."""
import numpy as np
import pytest

from fmdata.convert import convert, verify
from fmdata.errors import FmDataError
from fmdata.store import open_store

from builders import v1_arrays, write_v1
from processes import FMDATA, one_line_error, run


@pytest.fixture
def mask255(tmp_path):
    a = v1_arrays(30, seed=3)
    label = a["label"].astype(np.uint8) * 255  # MATLAB (H, W, N): abnormal as 255, as an image editor saves it
    label[0, 0, 2] = 7
    return write_v1(tmp_path / "rec.mat", {**a, "label": label}, classes={"label": "uint8"}), a, label


def test_refused_by_default_with_the_option_named(mask255, tmp_path):
    src, _, _ = mask255
    line = one_line_error(run([FMDATA, "convert", src, tmp_path / "s.zarr"]), 1, str(src))
    assert "expected 'label' values 0 or 1, got" in line and "--mask-nonzero" in line


def test_mask_nonzero_maps_above_zero_to_one_records_it_and_verify_agrees(mask255, tmp_path):
    src, arrays, label = mask255
    out = tmp_path / "s.zarr"
    r = run([FMDATA, "convert", src, out, "--mask-nonzero", "--workers", "1", "--no-progress"])
    assert r.returncode == 0, r.stderr
    root = open_store(str(out))
    want = (label > 0).transpose(2, 0, 1).astype(np.uint8)  # MATLAB (H, W, N) -> store (N, H, W)
    np.testing.assert_array_equal(root["mask"][:], want)
    assert root.recordings[0].mask_nonzero
    r = run([FMDATA, "verify", out, "--source", src])
    assert r.returncode == 0 and "every element equal the sources" in r.stdout, r.stdout + r.stderr
    # a store converted without the option is compared with 0/1 sources: its recording says so
    plain = tmp_path / "plain.mat"
    write_v1(plain, {**arrays, "label": (label > 0).astype(np.uint8)}, classes={"label": "uint8"})
    convert([str(plain)], str(tmp_path / "p.zarr"), workers=1, progress=False)
    assert not open_store(str(tmp_path / "p.zarr")).recordings[0].mask_nonzero
    assert verify(str(tmp_path / "p.zarr"), [str(plain)], workers=1, progress=False).ok


def test_negative_mask_values_are_refused_even_with_the_option(tmp_path):
    a = v1_arrays(20, seed=4)
    label = a["label"].astype(np.int16)
    label[1, 1, 5] = -1
    src = write_v1(tmp_path / "neg.mat", {**a, "label": label}, classes={"label": "int16"})
    with pytest.raises(FmDataError, match="values of 0 or above"):
        convert([str(src)], str(tmp_path / "n.zarr"), workers=1, mask_nonzero=True, progress=False)



def test_negative_mask_values_are_not_pointed_to_the_option(tmp_path):
    """A -1 in a mask is refused without pointing to --mask-nonzero, which refuses it too; so is a
    mask that also holds values the option would read (255): the option would not help."""
    a = v1_arrays(20, seed=5)
    label = a["label"].astype(np.int16) * 255
    label[1, 1, 5] = -1
    src = write_v1(tmp_path / "neg.mat", {**a, "label": label}, classes={"label": "int16"})
    for extra in ([], ["--mask-nonzero"]):
        line = one_line_error(run([FMDATA, "convert", src, tmp_path / "s.zarr", *extra]), 1, str(src))
        assert "expected 'label' values of 0 or above, got -1 at frame 5" in line and "--mask-nonzero" not in line
