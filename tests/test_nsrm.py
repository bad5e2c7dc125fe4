"""Non-Salient Region Masking (METHODS B.5) golden tests on hand-made maps."""

import numpy as np
import pytest

from wsss.errors import DataError
from wsss.methods.nsrm import dilate_object_mask, non_salient_region_masking


def _box_cover(mask: np.ndarray, up_left: int, down_right: int) -> np.ndarray:
    """Reference dilation: each object pixel covers [r − up_left, r + down_right] × same for columns."""
    out = np.zeros_like(mask, dtype=bool)
    for r, c in zip(*np.nonzero(mask)):
        out[max(0, r - up_left):r + down_right + 1, max(0, c - up_left):c + down_right + 1] = True
    return out


def test_dilation_reach_of_the_30_kernel():
    mask = np.zeros((80, 80), dtype=bool)
    mask[40, 40] = True
    rows, cols = np.nonzero(dilate_object_mask(mask, 30))
    # grows 14 px up/left and 15 px down/right of an object pixel
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (26, 55, 26, 55)
    # at the image corner nothing outside the image counts: a 16×16 block remains
    corner = np.zeros((40, 40), dtype=bool)
    corner[0, 0] = True
    grown = dilate_object_mask(corner, 30)
    assert grown.sum() == 16 * 16 and grown[:16, :16].all()
    assert not dilate_object_mask(np.zeros((20, 20), dtype=bool), 30).any()
    # odd kernels reach symmetrically
    rows, cols = np.nonzero(dilate_object_mask(mask, 3))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (39, 41, 39, 41)


def _scene():
    pred = np.zeros((60, 60), dtype=np.uint8)
    pred[5:15, 5:15] = 1          # predicted object
    pred[8, 8] = 3
    pseudo = np.zeros((60, 60), dtype=np.uint8)
    pseudo[40:42, 40:42] = 2      # class in the pseudo label where the prediction is 0 -> expansion
    pseudo[8, 8] = 1              # prediction is not 0 there: kept as 3
    pseudo[30, 55] = 255          # ignore in the pseudo label is not a class: no expansion
    saliency = np.zeros((60, 60), dtype=np.uint8)
    saliency[50, 5] = 1           # any non-zero saliency is object
    return pred, pseudo, saliency


def test_nsrm_complex_image_expansion_mask_and_dilation():
    pred, pseudo, saliency = _scene()
    out = non_salient_region_masking(pred, pseudo, saliency, classes=[1, 2])
    expanded = pred.copy()
    expanded[40:42, 40:42] = 2
    objects = (expanded != 0) | (saliency != 0)
    keep = _box_cover(objects, 14, 15)
    expected = np.where(keep, expanded, 255).astype(np.uint8)
    assert out.dtype == np.uint8
    assert np.array_equal(out, expected)
    # spot checks of the geometry
    assert out[40, 40] == 2 and out[8, 8] == 3
    assert out[30, 55] == 0  # the pseudo label's 255 is not copied (inside the dilated mask)
    assert out[29, 29] == 0 and out[30, 10] == 255 and out[10, 30] == 255   # object rows/cols 5..14
    assert out[36, 0] == 0 and out[35, 0] == 255                            # saliency pixel at row 50
    assert out[26, 50] == 0 and out[25, 50] == 255                          # expanded block at 40..41
    assert np.array_equal(pred, _scene()[0])  # input untouched


def test_nsrm_saliency_alone_keeps_its_neighbourhood():
    pred = np.zeros((40, 40), dtype=np.uint8)
    pred[0:5, 0:5] = 4
    pseudo = np.zeros_like(pred)
    saliency = np.zeros_like(pred)
    saliency[30, 30] = 7
    out = non_salient_region_masking(pred, pseudo, saliency, classes=[4, 9])
    assert out[30, 30] == 0 and out[16, 25] == 0 and out[15, 25] == 255  # 14 px up of row 30
    assert out[39, 39] == 0 and out[20, 10] == 255


def test_nsrm_single_class_images_keep_the_prediction():
    pred, pseudo, saliency = _scene()
    out = non_salient_region_masking(pred, pseudo, saliency, classes=[1])
    assert np.array_equal(out, pred)
    out_dup = non_salient_region_masking(pred, pseudo, saliency, classes=[1, 1])
    assert np.array_equal(out_dup, pred)  # one distinct class is not complex


def test_nsrm_one_percent_rule_for_every_image():
    pred = np.zeros((10, 20), dtype=np.uint8)
    pred[0, 0] = 5  # 0.5 % of the pixels
    pseudo = np.zeros_like(pred)
    saliency = np.zeros_like(pred)
    assert (non_salient_region_masking(pred, pseudo, saliency, classes=[5]) == 255).all()
    assert (non_salient_region_masking(pred, pseudo, saliency, classes=[5, 6]) == 255).all()
    pred[0, 1] = 5  # exactly 1 %: kept
    assert np.array_equal(non_salient_region_masking(pred, pseudo, saliency, classes=[5]), pred)
    assert non_salient_region_masking(pred, pseudo, saliency, classes=[5], min_fraction=0.02).max() == 255


def test_nsrm_rejects_mismatched_shapes():
    with pytest.raises(DataError):
        non_salient_region_masking(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4)), classes=[1, 2])
