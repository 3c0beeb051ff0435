"""Preprocessing: the step between reading a micrograph and scoring it.

A micrograph read from disk is brought to the picker's working pixel size by Fourier cropping
(:func:`downsample`, :func:`fourier_crop`), then normalized per micrograph with a two-component Gaussian
mixture (:func:`normalize`, :func:`fit_gmm`): the majority component is the ice the particles sit in, the
minority component catches carbon, thick ice and contamination, and the image is standardised by the
majority component alone so that a dark grid bar does not wash the ice out.  The fitted minority weight is
published per micrograph as a carbon/contamination fraction.

Everything here works on one micrograph at a time, so it streams.  Example::

    small, pixel_size = downsample(image, pixel_size=1.06, target_pixel_size=8.0)
    normalized, fit = normalize(small)
    fit.minor_weight   # carbon / contamination fraction of this micrograph
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["GMMFit", "downsample", "fit_gmm", "fourier_crop", "normalize"]

# --- GMM settings (method notes §1) -------------------------------------------------------------------------
PRIOR_ALPHA = 900.0
"""Beta(PRIOR_ALPHA, 1) prior on the weight of the majority component."""
START_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
"""Starting weights of the majority component; each is tried with the minority on either side."""
MAX_ITERATIONS = 100
TOLERANCE = 1e-6
"""EM stops when the log-posterior per (effective) sample changes by less than this."""
SAMPLE_FRACTION = 0.1
"""The reference fits on a random tenth of the pixels; the histogram counts are weighed by this fraction so
that the Beta prior has the same strength against the data as there (but no pixel is left out)."""
N_BINS = 1024
MIN_LEVELS = 16
"""A histogram with fewer occupied bins than this is a quantized image: use the affine fallback."""
_QUANTILES = (1e-4, 1 - 1e-4)
_RANGE_MARGIN = 0.1
_RANGE_STRIDE = 7
_MAD_TO_STD = 1.4826
_CHUNK_ELEMENTS = 1 << 20


# --- Fourier cropping ---------------------------------------------------------------------------------------
def fourier_crop(image: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Downsample an image by keeping the low-frequency box of its Fourier transform.

    The result is the ideal band-limited resampling of ``image`` onto an ``out_shape`` grid covering the same
    field of view: frequencies inside the output band are kept, the rest dropped.  Where an output size is
    even, its Nyquist bin receives the sum of the input's ``+n/2`` and ``-n/2`` bins, which is what sampling a
    signal band-limited to the output band gives (and the exact inverse of trigonometric interpolation).
    The spectrum is rescaled by ``out_area / in_area`` so the mean intensity is preserved.  The factor may be
    non-integer and may differ between the axes.  Computed separably in float32 / complex64 on the input's
    device: a real FFT along the rows, keeping only the needed columns, then an FFT along the columns of those
    columns only (much cheaper than a full 2-D transform).

    Args:
        image: 2-D real tensor ``(H, W)``; any real dtype, converted to float32.
        out_shape: ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.

    Returns:
        float32 tensor ``(h, w)`` on ``image.device`` (a float32 copy of ``image`` if the shapes are equal).

    Raises:
        ValueError: ``image`` is not 2-D, or ``out_shape`` is not within ``1 .. image.shape``.
    """
    h_in, w_in = _check_crop_args(image, out_shape)
    h, w = int(out_shape[0]), int(out_shape[1])
    if (h, w) == (h_in, w_in):
        return image.to(torch.float32, copy=True)
    spectrum = _fold_rfft_nyquist(_rfft_rows_low(image, w // 2 + 1), w, w_in)
    spectrum = spectrum * (h * w / (h_in * w_in))
    if h != h_in:
        spectrum = torch.fft.ifft(_keep_low_fft_bins(torch.fft.fft(spectrum, dim=0), h, h_in), dim=0)
    return torch.fft.irfft(spectrum, n=w, dim=1).contiguous()


def _check_crop_args(image: torch.Tensor, out_shape: tuple[int, int]) -> tuple[int, int]:
    if image.ndim != 2:
        raise ValueError(f"fourier_crop: expected a 2-D image, got shape {tuple(image.shape)}")
    if len(out_shape) != 2:
        raise ValueError(f"fourier_crop: out_shape must be (h, w), got {out_shape!r}")
    h_in, w_in = int(image.shape[0]), int(image.shape[1])
    if not (1 <= int(out_shape[0]) <= h_in and 1 <= int(out_shape[1]) <= w_in):
        raise ValueError(f"fourier_crop: out_shape {tuple(out_shape)} must lie within 1..{(h_in, w_in)}")
    return h_in, w_in


def _rfft_rows_low(image: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Real FFT of every row in float32, keeping bins ``0 .. n_keep - 1`` (a new tensor).

    On the CPU the rows go in blocks of about :data:`_CHUNK_ELEMENTS` pixels, each converted to float32 on
    its own: neither a float32 copy of the image nor its full spectrum (67 MB for 4096 x 4096) is ever
    held, at the speed of a single call (measured).
    """
    if image.device.type != "cpu":
        return torch.fft.rfft(image.to(torch.float32), dim=1)[:, :n_keep].clone()
    rows = max(1, _CHUNK_ELEMENTS // int(image.shape[1]))
    blocks = [
        torch.fft.rfft(image[i : i + rows].to(torch.float32), dim=1)[:, :n_keep]
        for i in range(0, int(image.shape[0]), rows)
    ]
    return torch.cat(blocks, dim=0)


def _fold_rfft_nyquist(kept: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Give an even output's Nyquist bin (the last kept column) both input bins +n/2 and -n/2, in place.

    For a real row the -n/2 bin is the conjugate of the +n/2 one, so their sum is twice the real part.
    """
    if n_out % 2 == 0 and n_out < n_in:
        kept[:, -1] = 2 * kept[:, -1].real
    return kept


def _keep_low_fft_bins(spectrum: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Keep the ``n_out`` lowest frequencies of a full-FFT axis (the first one) of length ``n_in``."""
    n_pos, n_neg = (n_out + 1) // 2, n_out // 2
    kept = torch.cat([spectrum[:n_pos], spectrum[n_in - n_neg :]], dim=0)
    if n_out % 2 == 0 and n_out < n_in:
        kept[n_pos] += spectrum[n_pos]  # fold input bin +n/2 onto the output's Nyquist bin -n/2
    return kept


def downsample(
    image: torch.Tensor, pixel_size: float, target_pixel_size: float
) -> tuple[torch.Tensor, float]:
    """Fourier-crop ``image`` to (about) ``target_pixel_size``, never upsampling.

    The output shape is ``round(H * pixel_size / target_pixel_size)`` by the same for ``W`` (halves round
    up, at least 1 px).  Rounding makes the two axes' true pixel sizes differ by a hair
    (``pixel_size * H / h`` vs ``pixel_size * W / w``); the one returned is that of the **x axis (width)**,
    ``pixel_size * W / w``, which is what coordinates along x are scaled with.

    Args:
        image: 2-D tensor ``(H, W)``.
        pixel_size: pixel size of ``image`` in Å/px, > 0.
        target_pixel_size: wanted pixel size in Å/px, > 0.

    Returns:
        ``(image_out, true_pixel_size)``: a float32 tensor on ``image.device`` and its x-axis pixel size.
        If ``target_pixel_size <= pixel_size`` (or rounding keeps the shape) the image is returned as float32
        (the same tensor if it already was) with ``pixel_size`` unchanged.

    Raises:
        ValueError: a pixel size is not a positive finite number, or ``image`` is not 2-D.
    """
    for name, value in (("pixel_size", pixel_size), ("target_pixel_size", target_pixel_size)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"downsample: {name} must be a positive number, got {value!r}")
    if image.ndim != 2:
        raise ValueError(f"downsample: expected a 2-D image, got shape {tuple(image.shape)}")
    h_in, w_in = int(image.shape[0]), int(image.shape[1])
    if target_pixel_size <= pixel_size:
        return image.to(torch.float32), float(pixel_size)
    ratio = pixel_size / target_pixel_size
    h, w = (max(1, math.floor(n * ratio + 0.5)) for n in (h_in, w_in))
    if (h, w) == (h_in, w_in):
        return image.to(torch.float32), float(pixel_size)
    return fourier_crop(image, (h, w)), pixel_size * w_in / w


# --- GMM normalization --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GMMFit:
    """The per-micrograph normalization: a two-component 1-D Gaussian mixture with one shared σ.

    Attributes:
        mean: μ of the majority component (the one carrying the Beta prior); the image is centred on it.
        std: the shared σ; the image is divided by it.
        minor_mean: μ of the minority component (equal to ``mean`` when one Gaussian fits best).
        minor_weight: weight of the minority component, the carbon/contamination fraction (0 when one
            Gaussian fits best, and for the fallback).
        log_posterior: log-posterior per effective sample at the fit, in the units of the pixel values
            (NaN for the fallback).
        iterations: EM iterations of the start that won (0 for one Gaussian and for the fallback).
        method: ``"gmm"``, or ``"affine-fallback"`` (median and 1.4826·MAD) when the fit degenerates.
    """

    mean: float
    std: float
    minor_mean: float
    minor_weight: float
    log_posterior: float
    iterations: int
    method: str

    def as_dict(self) -> dict[str, float | int | str | None]:
        """Plain JSON-ready dict of the fields; a non-finite float (the fallback's NaN) becomes ``None``."""
        out: dict[str, float | int | str | None] = {}
        for key, value in asdict(self).items():
            out[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


def normalize(image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, GMMFit]:
    """Standardise a micrograph by the majority component of its GMM fit: ``(x - mean) / std``.

    Args:
        image: image tensor (any device) or numpy array; the fit uses all its values.

    Returns:
        ``(normalized, fit)``: a float32 tensor of the input's shape on the input's device (CPU for a numpy
        array; non-finite input pixels stay non-finite), and the :class:`GMMFit` used.

    Raises:
        ValueError: the image has no finite value or its finite values are all equal.
    """
    tensor = _as_tensor(image)
    fit = fit_gmm(tensor)
    if tensor.dtype != torch.float64:  # float64 input is centred in float64, then cast
        tensor = tensor.to(torch.float32)
    return ((tensor - fit.mean) / fit.std).to(torch.float32), fit


def fit_gmm(values: torch.Tensor | np.ndarray) -> GMMFit:
    """Fit the normalization mixture of method notes §1 to pixel values, deterministically.

    Two Gaussian components share one variance; the majority weight π has a Beta(900, 1) prior (MAP
    M-step).  EM runs from every weight in :data:`START_WEIGHTS`, with the minority initialised once on the
    low side and once on the high side of the value distribution (22 starts, run together as a batch), and
    the single Gaussian is a further candidate; the highest log-posterior wins.  Each start stops after
    :data:`MAX_ITERATIONS` iterations or when its log-posterior per effective sample changes by less than
    :data:`TOLERANCE` (1e-6: a tolerance of 1e-3 per sample stopped an 85/15 mixture 0.03σ short of its
    optimum, measured).  The fit runs on a histogram of :data:`N_BINS` bins over the 0.01 %–99.99 % quantile
    range (of every 7th value) widened by 10 % each side, values outside it ignored as outliers: weighted EM
    over the bin centres with a Sheppard correction of the variance, which matched EM on all the pixels to
    four decimals.  The counts are weighed by :data:`SAMPLE_FRACTION`
    so the prior is as strong as in the reference, which fits on a random tenth of the pixels.

    Falls back to median and 1.4826·MAD (or the std where the MAD is 0), with ``method="affine-fallback"``
    and ``minor_weight=0``, when values are not all finite, when fewer than :data:`MIN_LEVELS` histogram bins
    are occupied (a quantized image: EM would collapse onto a level), or when the fitted σ is not finite or
    narrower than two bins.  For a quantized image the median and MAD are taken of the values spread evenly
    over their quantization step (see :func:`_quantized_fit`): with more than half the pixels on one grey
    level the plain MAD is 0, and the std that would replace it is inflated by carbon and contamination.

    Args:
        values: pixel values, any shape (flattened); tensor on any device or numpy array.

    Returns:
        The :class:`GMMFit`.

    Raises:
        ValueError: no finite value, or the finite values are all equal.
    """
    x = _as_flat_numpy(values)
    finite = np.isfinite(x)
    if not finite.all():
        return _affine_fit(x[finite])
    hist = _histogram(x)
    if hist is None or np.count_nonzero(hist.counts) < MIN_LEVELS:
        return _quantized_fit(x)
    fit = _best_fit(hist)
    if not (math.isfinite(fit.std) and fit.std > 2 * hist.width and math.isfinite(fit.mean)):
        return _affine_fit(x)
    return fit


def _as_tensor(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A tensor view of ``image``; a numpy array is first made contiguous and native-endian (as mrcfile
    may hand over a flipped or big-endian array, which torch refuses)."""
    if isinstance(image, torch.Tensor):
        return image
    array = np.asarray(image)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))


def _as_flat_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Flattened values on the CPU, float64 if they were float64, else float32."""
    if isinstance(values, torch.Tensor):
        dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
        return values.detach().to("cpu", dtype).reshape(-1).numpy()
    array = np.asarray(values)
    return array.astype(np.float64 if array.dtype == np.float64 else np.float32, copy=False).ravel()


def _affine_fit(x: np.ndarray) -> GMMFit:
    """Median and 1.4826·MAD (std where the MAD is 0) of finite values ``x``."""
    if x.size == 0:
        raise ValueError("cannot normalize: the image has no finite pixel")
    x = x.astype(np.float64)
    median = float(np.median(x))
    scale = _MAD_TO_STD * float(np.median(np.abs(x - median)))
    if not scale > 0:
        scale = float(np.std(x))
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("cannot normalize: all finite pixels of the image have the same value")
    return GMMFit(median, scale, median, 0.0, math.nan, 0, "affine-fallback")


_GOLDEN = (math.sqrt(5) - 1) / 2


def _quantized_fit(x: np.ndarray) -> GMMFit:
    """Median and 1.4826·MAD of a quantized image, its values spread over their quantization step.

    Each value (every 7th of a large image) is spread over ``[v - step/2, v + step/2)`` by a fixed
    low-discrepancy sequence (the golden-ratio sequence: deterministic, no random state), ``step`` being the
    smallest gap between its grey levels.  This estimates the median and MAD of the continuous image that was
    quantized, which the plain MAD cannot once most pixels share a level (it is then 0).  An image with one
    level only falls back to :func:`_affine_fit` (which refuses it).
    """
    sample = x[::_RANGE_STRIDE] if x.size > _CHUNK_ELEMENTS else x
    levels = np.unique(sample)
    if levels.size < 2:
        return _affine_fit(x)
    step = float(np.min(np.diff(levels.astype(np.float64))))
    spread = ((np.arange(sample.size, dtype=np.float64) * _GOLDEN) % 1.0 - 0.5) * step
    values = sample.astype(np.float64) + spread
    median = float(np.median(values))
    scale = _MAD_TO_STD * float(np.median(np.abs(values - median)))
    if not (math.isfinite(scale) and scale > 0):
        return _affine_fit(x)
    return GMMFit(median, scale, median, 0.0, math.nan, 0, "affine-fallback")


@dataclass(frozen=True)
class _Histogram:
    """Counts at bin centres; the centres are kept standardised (``(x - shift) / scale``) for EM."""

    centres: np.ndarray  # standardised
    counts: np.ndarray  # weighed by SAMPLE_FRACTION
    shift: float
    scale: float
    width: float  # bin width in data units


def _histogram(x: np.ndarray) -> _Histogram | None:
    """Histogram of ``x`` over its robust range; ``None`` when the range is empty."""
    lo, hi = np.quantile(x[::_RANGE_STRIDE], _QUANTILES).astype(np.float64)
    if not hi > lo:
        return None
    lo, hi = lo - _RANGE_MARGIN * (hi - lo), hi + _RANGE_MARGIN * (hi - lo)
    width = (hi - lo) / N_BINS
    index = np.floor((x - lo) * (1.0 / width)).astype(np.int64)
    index = index[(index >= 0) & (index < N_BINS)]
    counts = np.bincount(index, minlength=N_BINS).astype(np.float64) * SAMPLE_FRACTION
    centres = lo + (np.arange(N_BINS) + 0.5) * width
    total = counts.sum()
    shift = float(counts @ centres / total)
    scale = float(np.sqrt(counts @ (centres - shift) ** 2 / total))
    if not scale > 0:
        return None
    return _Histogram((centres - shift) / scale, counts, shift, scale, float(width))


def _best_fit(hist: _Histogram) -> GMMFit:
    """Run the batched EM and the single Gaussian; return the highest log-posterior, in data units."""
    occupied = hist.counts > 0  # empty bins add nothing to any sum: leave them out of the EM
    x, c = hist.centres[occupied], hist.counts[occupied]
    sheppard = (hist.width / hist.scale) ** 2 / 12.0
    n = c.sum()
    sx, sxx = c @ x, c @ (x * x)
    mu0 = sx / n
    var0 = max(sxx / n - mu0 * mu0 - sheppard, 1e-12)
    single_lp = -0.5 * math.log(2 * math.pi * var0) - 0.5 * (sxx / n - mu0 * mu0) / var0
    params = np.stack(_initial_params(x, c, sheppard))
    params, lp, iters = _run_em(x, c, params, sheppard)
    pi, mu_a, mu_b, var = params
    best = int(np.argmax(np.where(np.isfinite(lp), lp, -np.inf)))
    log_s = math.log(hist.scale)
    if not lp[best] > single_lp:
        return GMMFit(*_to_data_units(hist, mu0, var0, mu0), 0.0, float(single_lp) - log_s, 0, "gmm")
    mean, std, minor = _to_data_units(hist, mu_a[best], var[best], mu_b[best])
    return GMMFit(mean, std, minor, float(1 - pi[best]), float(lp[best]) - log_s, int(iters[best]), "gmm")


def _to_data_units(hist: _Histogram, mu_a: float, var: float, mu_b: float) -> tuple[float, float, float]:
    shift, scale = hist.shift, hist.scale
    return float(shift + scale * mu_a), float(scale * math.sqrt(var)), float(shift + scale * mu_b)


def _initial_params(
    x: np.ndarray, c: np.ndarray, sheppard: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hard splits of the histogram mass: for each start weight w, the minority (1 - w) on the low side,
    then on the high side.  The boundary bin is shared fractionally, so no group is ever empty."""
    w = np.asarray(START_WEIGHTS, dtype=np.float64)
    pi = np.concatenate([w, w])
    low_mass = np.concatenate([1 - w, w]) * c.sum()  # mass of the low group
    cum_c, cum_cx, cum_cxx = np.cumsum(c), np.cumsum(c * x), np.cumsum(c * x * x)
    k = np.minimum(np.searchsorted(cum_c, low_mass), x.size - 1)
    before = np.where(k > 0, cum_c[k - 1], 0.0)
    sum_x = np.where(k > 0, cum_cx[k - 1], 0.0) + (low_mass - before) * x[k]
    n = c.sum()
    mu_low, mu_high = sum_x / low_mass, (cum_cx[-1] - sum_x) / (n - low_mass)
    var = (cum_cxx[-1] - low_mass * mu_low**2 - (n - low_mass) * mu_high**2) / n - sheppard
    var = np.maximum(var, 1e-6)
    n_w = len(START_WEIGHTS)
    mu_a = np.concatenate([mu_high[:n_w], mu_low[n_w:]])  # majority opposite the minority
    mu_b = np.concatenate([mu_low[:n_w], mu_high[n_w:]])
    return pi, mu_a, mu_b, var


def _run_em(
    x: np.ndarray, c: np.ndarray, params: np.ndarray, sheppard: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched EM over starts: ``params`` rows are (π, μ_A, μ_B, σ²), one column per start.  Converged
    starts drop out of the batch.  Returns the final params, log-posteriors and iteration counts."""
    stats = (c.sum(), c @ x, c @ (x * x))
    cx = c * x
    params = params.copy()
    lp = np.full(params.shape[1], -np.inf)  # log-posterior at the current parameters of each start
    iters = np.zeros(params.shape[1], dtype=np.int64)
    idx = np.arange(params.shape[1])  # the starts still running
    for _ in range(MAX_ITERATIONS + 1):
        current = params[:, idx]
        n_a, s_a, lp_now = _e_step(x, c, cx, stats, current)
        done = (np.abs(lp_now - lp[idx]) < TOLERANCE) | (iters[idx] >= MAX_ITERATIONS)
        lp[idx] = lp_now
        idx, keep = idx[~done], ~done
        if idx.size == 0:
            break
        params[:, idx] = _m_step(stats, n_a[keep], s_a[keep], current[:, keep], sheppard)
        iters[idx] += 1
    return params, lp, iters


def _e_step(
    x: np.ndarray, c: np.ndarray, cx: np.ndarray, stats: tuple[float, float, float], params: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Responsibility sums (count, first moment) of component A and the log-posterior per effective
    sample, for every start (column of ``params``).

    log(r_A / r_B) is linear in x for a shared variance: z = a + b·x.  r_A = sigmoid(z), and the mixture
    log-density is that of A plus softplus(-z), both computed stably.
    """
    n, sx, sxx = stats
    pi, mu_a, mu_b, var = params
    with np.errstate(divide="ignore"):
        log_pi, log_1mpi = np.log(pi), np.log1p(-pi)
    b = (mu_a - mu_b) / var
    a = log_pi - log_1mpi - (mu_a * mu_a - mu_b * mu_b) / (2 * var)
    z = a[:, None] + b[:, None] * x[None, :]
    softplus = np.maximum(-z, 0.0) + np.log1p(np.exp(-np.abs(z)))  # log(1 + exp(-z))
    resp_a = np.exp(-softplus)
    sum_log_a = n * log_pi - (sxx - 2 * mu_a * sx + n * mu_a * mu_a) / (2 * var)
    loglik = sum_log_a + softplus @ c - 0.5 * n * np.log(2 * np.pi * var)
    lp = (loglik + (PRIOR_ALPHA - 1) * log_pi) / n
    return resp_a @ c, resp_a @ cx, lp


def _m_step(
    stats: tuple[float, float, float], n_a: np.ndarray, s_a: np.ndarray, params: np.ndarray, sheppard: float
) -> np.ndarray:
    """MAP update, π = (n_A + α - 1) / (n + α - 1); a component with no mass keeps its mean."""
    n, sx, sxx = stats
    n_b = n - n_a
    tiny = 1e-12 * n
    mu_a = np.where(n_a > tiny, s_a / np.maximum(n_a, tiny), params[1])
    mu_b = np.where(n_b > tiny, (sx - s_a) / np.maximum(n_b, tiny), params[2])
    var = (sxx - n_a * mu_a**2 - n_b * mu_b**2) / n - sheppard
    pi = (n_a + PRIOR_ALPHA - 1) / (n + PRIOR_ALPHA - 1)
    return np.stack([pi, mu_a, mu_b, np.maximum(var, 1e-12)])
