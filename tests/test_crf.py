"""Dense CRF wrapper (pydensecrf2) with the DeepLab-v2 defaults of METHODS A.4."""

import numpy as np
import pytest

from wsss.errors import DataError
from wsss.postprocess import CrfConfig, crf_from_labels, dense_crf, probs_from_labels


def _two_region_scene(seed: int = 0):
    """24×24 image: left half red, right half blue; true label 0 left, 1 right; noisy probabilities
    that favour the wrong label on about 30 % of the pixels."""
    rng = np.random.RandomState(seed)
    image = np.zeros((24, 24, 3), dtype=np.uint8)
    image[:, :12] = (200, 30, 30)
    image[:, 12:] = (30, 30, 200)
    truth = np.zeros((24, 24), dtype=np.int64)
    truth[:, 12:] = 1
    confidence = rng.uniform(0.55, 0.75, size=(24, 24))
    flipped = rng.rand(24, 24) < 0.3
    p_true = np.where(flipped, 1.0 - confidence, confidence)
    probs = np.empty((2, 24, 24), dtype=np.float32)
    probs[0] = np.where(truth == 0, p_true, 1.0 - p_true)
    probs[1] = 1.0 - probs[0]
    return image, probs, truth


def test_defaults_are_the_deeplab_v2_values():
    config = CrfConfig()
    assert config.as_kwargs() == {"iterations": 10, "gaussian_sxy": 1.0, "gaussian_compat": 3.0,
                                  "bilateral_sxy": 67.0, "bilateral_srgb": 3.0, "bilateral_compat": 4.0}


def test_dense_crf_shape_range_and_cleaning():
    image, probs, truth = _two_region_scene()
    refined = dense_crf(image, probs)
    assert refined.shape == (2, 24, 24) and refined.dtype == np.float32
    assert refined.min() >= 0.0 and refined.max() <= 1.0
    assert np.allclose(refined.sum(axis=0), 1.0, atol=1e-5)
    before = (probs.argmax(0) == truth).mean()
    after = (refined.argmax(0) == truth).mean()
    assert before < 0.8
    assert after > 0.95 and after > before + 0.2


def test_zero_iterations_return_the_normalised_unary():
    image, probs, _ = _two_region_scene(1)
    probs[0, 0, 0], probs[1, 0, 0] = 0.0, 1.0  # clipped to 1e-5 before −log
    out = dense_crf(image, probs, iterations=0)
    clipped = np.clip(probs, 1e-5, 1.0)
    assert np.allclose(out, clipped / clipped.sum(0, keepdims=True), atol=1e-6)


def test_parameters_are_passed_through():
    image, probs, _ = _two_region_scene(2)
    base = dense_crf(image, probs, iterations=5)
    # zero pairwise weights: the CRF leaves the unary alone however many iterations
    flat = dense_crf(image, probs, iterations=5, gaussian_compat=0, bilateral_compat=0)
    assert np.allclose(flat, probs, atol=1e-5)
    variants = [
        dict(iterations=1),
        dict(gaussian_sxy=5),
        dict(gaussian_compat=10),
        dict(bilateral_sxy=2),
        dict(bilateral_srgb=500),  # colours 170 apart stop separating the regions
        dict(bilateral_compat=1),
    ]
    for change in variants:
        other = dense_crf(image, probs, **{"iterations": 5, **change})
        assert np.abs(other - base).max() > 1e-3, change


def test_dense_crf_validates_inputs():
    image, probs, _ = _two_region_scene()
    with pytest.raises(DataError):
        dense_crf(image[:20], probs)
    with pytest.raises(DataError):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(DataError):
        dense_crf(image, probs[:1])


def test_probs_from_labels_and_crf_from_labels():
    label = np.array([[0, 2, 255]], dtype=np.uint8)
    probs = probs_from_labels(label, num_labels=3, gt_prob=0.7)
    assert np.allclose(probs[:, 0, 0], [0.7, 0.15, 0.15])
    assert np.allclose(probs[:, 0, 1], [0.15, 0.15, 0.7])
    assert np.allclose(probs[:, 0, 2], [1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(DataError):
        probs_from_labels(label, num_labels=2)

    image, noisy, truth = _two_region_scene(3)
    hard = noisy.argmax(0).astype(np.uint8)
    hard[:3, :3] = 255
    refined = crf_from_labels(image, hard, num_labels=2)
    assert refined.dtype == np.uint8 and refined.shape == hard.shape
    assert (refined[:3, :3] == 255).all()  # ignore kept by default
    known = hard != 255
    assert (refined[known] == truth[known]).mean() > (hard[known] == truth[known]).mean() + 0.2
    filled = crf_from_labels(image, hard, num_labels=2, keep_ignore=False)
    assert (filled[:3, :3] == 0).all()  # filled from the red left region
