"""Tests of streampick.preprocess: Fourier cropping, downsampling and the GMM normalization."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streampick.preprocess import GMMFit, downsample, fit_gmm, fourier_crop, normalize


# --- helpers ------------------------------------------------------------------------------------------------
def _pad_axis(spectrum: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Zero-pad a full FFT axis from n to n_out, splitting an even n's Nyquist bin in half (the
    trigonometric interpolant of a real signal)."""
    spectrum = np.moveaxis(spectrum, axis, 0)
    n = spectrum.shape[0]
    n_pos, n_neg = (n + 1) // 2, n // 2
    out = np.zeros((n_out,) + spectrum.shape[1:], dtype=complex)
    out[:n_pos] = spectrum[:n_pos]
    out[n_out - n_neg :] = spectrum[n - n_neg :]
    if n % 2 == 0 and n < n_out:
        out[n_out - n_neg] *= 0.5  # the Nyquist bin -n/2 keeps half
        out[n_pos] = out[n_out - n_neg]  # +n/2 gets the other half
    return np.moveaxis(out, 0, axis)


def _band_limited_pair(small_shape: tuple[int, int], big_shape: tuple[int, int], seed: int = 0):
    """A random small image and its band-limited interpolation onto a bigger grid (same field of view)."""
    small = np.random.default_rng(seed).normal(size=small_shape)
    spectrum = _pad_axis(_pad_axis(np.fft.fft2(small), big_shape[0], 0), big_shape[1], 1)
    big = np.fft.ifft2(spectrum).real * (big_shape[0] * big_shape[1]) / (small_shape[0] * small_shape[1])
    return small, big


def _mixture(n: int, weight: float, minor_mean: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    major = rng.random(n) < weight
    return np.where(major, rng.normal(0.0, 1.0, n), rng.normal(minor_mean, 1.0, n)).astype(np.float32)


# --- fourier_crop -------------------------------------------------------------------------------------------
def test_test_helper_interpolates_through_the_samples() -> None:
    # the band-limited interpolant passes through the original samples (checks the helper itself)
    for small_shape in [(8, 6), (7, 9)]:
        small, big = _band_limited_pair(small_shape, (small_shape[0] * 3, small_shape[1] * 3))
        np.testing.assert_allclose(big[::3, ::3], small, atol=1e-10)


@pytest.mark.parametrize(
    "small_shape, big_shape",
    [((16, 16), (64, 64)), ((15, 17), (64, 64)), ((16, 18), (61, 67)), ((17, 15), (63, 50)),
     ((20, 21), (57, 100)), ((1, 5), (4, 33)), ((64, 20), (64, 64)), ((12, 33), (40, 33))],
)
def test_fourier_crop_is_exact_on_band_limited_images(small_shape, big_shape) -> None:
    small, big = _band_limited_pair(small_shape, big_shape)
    out = fourier_crop(torch.from_numpy(big), small_shape)
    assert out.dtype == torch.float32 and tuple(out.shape) == small_shape
    err = np.abs(out.numpy() - small).max() / np.abs(small).max()
    assert err < 1e-4


def test_fourier_crop_integer_factor_equals_subsampling_band_limited_image() -> None:
    _, big = _band_limited_pair((30, 40), (120, 160), seed=3)
    out = fourier_crop(torch.from_numpy(big).float(), (30, 40)).numpy()
    np.testing.assert_allclose(out, big[::4, ::4], atol=1e-4 * np.abs(big).max())


def test_fourier_crop_preserves_the_mean() -> None:
    image = torch.from_numpy(np.random.default_rng(1).gamma(2.0, 3.0, size=(301, 256)).astype(np.float32))
    for shape in [(100, 100), (37, 211), (1, 1), (300, 256)]:
        out = fourier_crop(image, shape)
        assert math.isclose(float(out.double().mean()), float(image.double().mean()), rel_tol=1e-5)


def test_fourier_crop_accepts_integer_images() -> None:
    image = torch.full((40, 50), 7, dtype=torch.int16)
    assert torch.allclose(fourier_crop(image, (13, 21)), torch.full((13, 21), 7.0), atol=1e-5)


def test_fourier_crop_same_shape_is_a_float32_copy() -> None:
    image = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    out = fourier_crop(image, (3, 4))
    assert out.dtype == torch.float32 and torch.equal(out, image.float())


@pytest.mark.parametrize("shape", [(0, 4), (5, 4), (3, 5)])
def test_fourier_crop_rejects_bad_shapes(shape) -> None:
    with pytest.raises(ValueError):
        fourier_crop(torch.zeros(4, 4), shape)
    with pytest.raises(ValueError):
        fourier_crop(torch.zeros(2, 4, 4), (2, 2))


# --- downsample ---------------------------------------------------------------------------------------------
def test_downsample_non_integer_factor_keeps_a_low_frequency_cosine() -> None:
    n, pixel_size, target = 1000, 1.0, 7.3
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cycles = 5  # 5 periods across the field: far below the output Nyquist
    image = 3.0 + 2.0 * np.cos(2 * np.pi * cycles * xx / n) * np.cos(2 * np.pi * 3 * yy / n + 0.4)
    out, true_pixel = downsample(torch.from_numpy(image.astype(np.float32)), pixel_size, target)
    m = round(n * pixel_size / target)  # 137
    assert tuple(out.shape) == (m, m)
    assert true_pixel == pytest.approx(n * pixel_size / m)  # 7.2993, not the 1.0 of the source
    oy, ox = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    expected = 3.0 + 2.0 * np.cos(2 * np.pi * cycles * ox / m) * np.cos(2 * np.pi * 3 * oy / m + 0.4)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_downsample_rectangular_reports_x_axis_pixel_size() -> None:
    out, true_pixel = downsample(torch.ones(301, 500), 1.0, 4.0)
    assert tuple(out.shape) == (75, 125)
    assert true_pixel == pytest.approx(500 / 125)


def test_downsample_never_upsamples() -> None:
    image = torch.randn(50, 60, dtype=torch.float64)
    for target in (0.5, 1.0):
        out, pixel = downsample(image, 1.0, target)
        assert out.dtype == torch.float32 and tuple(out.shape) == (50, 60) and pixel == 1.0
        assert torch.equal(out, image.float())
    out, pixel = downsample(image, 1.0, 1.004)  # rounds back to the same shape: nothing to do
    assert tuple(out.shape) == (50, 60) and pixel == 1.0


def test_downsample_tiny_output_is_at_least_one_pixel() -> None:
    out, pixel = downsample(torch.ones(10, 10), 1.0, 1000.0)
    assert tuple(out.shape) == (1, 1) and pixel == pytest.approx(10.0)
    assert float(out) == pytest.approx(1.0)


@pytest.mark.parametrize("pixel, target", [(0.0, 4.0), (-1.0, 4.0), (1.0, 0.0), (1.0, -2.0), (math.nan, 4.0)])
def test_downsample_rejects_non_positive_pixel_sizes(pixel, target) -> None:
    with pytest.raises(ValueError):
        downsample(torch.ones(8, 8), pixel, target)


# --- GMM ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("minor_mean", [-3.0, 3.0])
def test_fit_gmm_recovers_a_known_mixture(minor_mean) -> None:
    fit = fit_gmm(_mixture(512 * 512, 0.85, minor_mean).reshape(512, 512))
    assert fit.method == "gmm"
    assert abs(fit.mean - 0.0) < 0.05
    assert abs(fit.minor_mean - minor_mean) < 0.05
    assert abs(fit.std - 1.0) < 0.03
    assert abs(fit.minor_weight - 0.15) < 0.02
    assert 0 < fit.iterations <= 100 and math.isfinite(fit.log_posterior)


def test_fit_gmm_single_gaussian_reports_no_minority() -> None:
    # Defined output for one Gaussian: either the single-Gaussian candidate wins (minor_weight == 0 and
    # minor_mean == mean), or a split with a negligible minority; mean and std are those of the Gaussian.
    for seed in range(3):
        values = np.random.default_rng(seed).normal(5.0, 2.0, 512 * 512).astype(np.float32)
        fit = fit_gmm(values)
        assert fit.method == "gmm"
        assert abs(fit.mean - 5.0) < 0.02 and abs(fit.std - 2.0) < 0.02
        assert fit.minor_weight < 0.02 or abs(fit.minor_mean - fit.mean) < 0.1 * fit.std
    fit = fit_gmm(np.random.default_rng(0).normal(5.0, 2.0, 512 * 512))
    assert fit.minor_weight == 0.0 and fit.minor_mean == fit.mean and fit.iterations == 0


def test_fit_gmm_is_deterministic_and_accepts_tensors() -> None:
    values = _mixture(256 * 256, 0.8, -2.5, seed=4)
    first, second = fit_gmm(values), fit_gmm(values.copy())
    assert first == second
    assert fit_gmm(torch.from_numpy(values)) == first


@pytest.mark.parametrize(
    "image",
    [
        np.round(np.random.default_rng(2).normal(0, 0.6, (256, 256))).clip(-2, 1).astype(np.float32),  # 4 levels
        np.clip(np.round(np.random.default_rng(2).normal(5, 2, (256, 256))), 0, 9).astype(np.uint8),  # 10
        (1000 + 1e-5 * np.random.default_rng(3).normal(size=(256, 256))).astype(np.float32),  # tiny variance
        np.r_[np.zeros(1000), 1.0],  # one pixel differs
    ],
    ids=["4-levels", "8bit-10-levels", "tiny-variance-float32", "one-pixel"],
)
def test_fit_gmm_falls_back_on_degenerate_images(image) -> None:
    fit = fit_gmm(image)
    assert fit.method == "affine-fallback" and fit.minor_weight == 0.0 and fit.iterations == 0
    assert math.isfinite(fit.std) and fit.std > 0
    out, _ = normalize(image)
    assert torch.isfinite(out).all()


def test_fallback_uses_median_and_mad() -> None:
    image = np.repeat(np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32), [101, 300, 300, 300])
    fit = fit_gmm(image)
    assert fit.method == "affine-fallback"
    # Quantized: the median and MAD of the levels spread evenly over their unit step (each level v over
    # [v - 0.5, v + 0.5)): median 1.5 + (0.5 - 401/1001) * 1001/300 = 1.832, MAD 0.834 (the plain ones: 2, 1).
    assert fit.mean == pytest.approx(1.832, abs=0.005) and fit.std == pytest.approx(1.4826 * 0.834, abs=0.01)


def test_fit_gmm_with_nan_falls_back_on_the_finite_pixels() -> None:
    image = np.random.default_rng(5).normal(1.0, 3.0, (128, 128)).astype(np.float32)
    image[3, 4] = np.nan
    fit = fit_gmm(image)
    assert fit.method == "affine-fallback"
    assert abs(fit.mean - 1.0) < 0.15 and abs(fit.std - 3.0) < 0.15
    assert fit.as_dict()["log_posterior"] is None


@pytest.mark.parametrize("image", [np.ones((16, 16)), np.full((4, 4), np.nan)], ids=["constant", "all-nan"])
def test_fit_gmm_raises_when_nothing_to_normalize(image) -> None:
    with pytest.raises(ValueError):
        fit_gmm(image)


def test_fit_gmm_scale_and_shift_invariant() -> None:
    values = _mixture(256 * 256, 0.85, -3.0, seed=6).astype(np.float64)
    base, moved = fit_gmm(values), fit_gmm(1e4 + 1e-3 * values)
    assert moved.mean == pytest.approx(1e4 + 1e-3 * base.mean, abs=1e-7)
    assert moved.std == pytest.approx(1e-3 * base.std, rel=1e-6)
    assert moved.minor_weight == pytest.approx(base.minor_weight, abs=1e-6)


def test_normalize_standardises_the_majority_component() -> None:
    rng = np.random.default_rng(7)
    major = rng.random(512 * 512) < 0.85
    values = np.where(major, rng.normal(0.0, 1.0, major.size), rng.normal(-3.0, 1.0, major.size))
    image = torch.from_numpy((values * 40.0 + 1000.0).astype(np.float32).reshape(512, 512))
    out, fit = normalize(image)
    assert out.dtype == torch.float32 and out.shape == image.shape and out.device == image.device
    on_majority = out.numpy().ravel()[major]
    assert abs(float(on_majority.mean())) < 0.05 and abs(float(on_majority.std()) - 1.0) < 0.03
    assert fit.minor_mean == pytest.approx(1000.0 - 120.0, abs=2.0)


def test_normalize_accepts_numpy_and_float64() -> None:
    image = 1.0 + 1e-7 * np.random.default_rng(8).normal(size=(128, 128))  # float64: tiny but resolvable
    out, fit = normalize(image)
    assert fit.method == "gmm" and out.dtype == torch.float32
    assert abs(float(out.mean())) < 0.05 and abs(float(out.std()) - 1.0) < 0.05


def test_normalize_accepts_flipped_big_endian_arrays() -> None:
    image = np.random.default_rng(9).normal(3.0, 2.0, (64, 64)).astype(">f4")[::-1]
    out, fit = normalize(image)
    expected = (image.astype(np.float64) - fit.mean) / fit.std
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_gmmfit_as_dict_is_plain() -> None:
    fit = GMMFit(1.0, 2.0, 0.5, 0.1, -1.4, 7, "gmm")
    assert fit.as_dict() == {
        "mean": 1.0, "std": 2.0, "minor_mean": 0.5, "minor_weight": 0.1, "log_posterior": -1.4,
        "iterations": 7, "method": "gmm",
    }
