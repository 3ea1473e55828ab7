r"""Raw detector intensities → line integrals: flat/dark correction or I0 from air, bad pixels, rings.

A detector pixel behind line integral :math:`p` reads on average :math:`I = D + (F - D)\,e^{-p}`
(Beer–Lambert with an offset: :math:`D` the dark field, read with the beam off; :math:`F` the
flat field, read with the beam on and nothing in it; both in counts, per pixel), so

.. math:: p = -\log\frac{I - D}{F - D}.

Without a flat field the incident intensity is taken from air seen in each frame:
:math:`p = -\log\bigl((I - D)/I_{0,k}\bigr)` with :math:`I_{0,k}` frame :math:`k`'s air level
(:func:`air_level`), which also follows the source's drift from frame to frame; given with a flat
field, the air level rescales each frame's ratio so that air reads :math:`p = 0`.

Photon noise: :math:`\operatorname{Var} p \approx \operatorname{Var} I / (F - D)^2 e^{-2p}`, i.e.
:math:`1/\bar N` for :math:`\bar N = (F - D)e^{-p}` Poisson counts (Elbakri & Fessler, IEEE TMI
21(2) 2002, Eq. 1), plus the dark current's variance over :math:`\bar N^2`.

Everything here is NumPy/SciPy on arrays in host memory (no JAX): ``(views, nv, nu)`` stacks, as
:func:`jaxmedrf.io.load_frames` reads them, ``(nv, nu)`` fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
from jaxtyping import Bool, Float, Real
from scipy import ndimage

__all__ = [
    "BAD_PIXEL_MODES", "Preprocessed", "air_level", "bad_pixels_from_fields", "bad_pixels_from_frames",
    "raw_to_line_integrals", "remove_stripes", "replace_bad_pixels", "stripe_window",
]

BAD_PIXEL_MODES = ("auto", "fields", "temporal", "both", "none")

# Bad pixels from the flat and dark fields.
GAIN_FACTOR = 2.0  # a pixel whose gain F − D is off from its 5×5 neighbourhood's median by more than this factor
DARK_SIGMAS = 10.0  # … or whose dark deviates from its neighbourhood by more than this many robust σ
DARK_SIGMA_FLOOR = 1e-3  # σ of the dark at least this fraction of the median gain (a noiseless dark has σ = 0)
FIELD_WINDOW = 5  # neighbourhood of those medians, pixels
MAX_NONPOSITIVE_GAIN = 0.01  # refuse fields where F − D ≤ 0 at more than this fraction of the pixels

# Bad pixels from the frames (temporal statistics of the line integrals).
TEMPORAL_SIGMAS = 8.0  # temporal mean off from its neighbours by more than this many robust σ …
TEMPORAL_MIN_DEVIATION = 0.05  # … and by more than this (line-integral units), or
STUCK_FRACTION = 0.05  # temporal standard deviation below this fraction of its neighbourhood's: stuck

MAX_RADIUS = 3  # a bad pixel takes the median of its good neighbours up to this many pixels away


def _robust_sigma(x: np.ndarray) -> float:
    """Standard deviation from the median absolute deviation (1.4826 · MAD; Gaussian-consistent)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def bad_pixels_from_fields(
    flat: Real[np.ndarray, "nv nu"] | None,
    *,
    dark: Real[np.ndarray, "nv nu"] | None = None,
    gain_factor: float = GAIN_FACTOR,
    dark_sigmas: float = DARK_SIGMAS,
) -> Bool[np.ndarray, "nv nu"]:
    """Dead and hot pixels seen in the flat and dark fields.

    A pixel is bad when its gain :math:`G = F - D` is not positive (dead: it reads the dark level
    with the beam on), or differs from the median of its 5×5 neighbourhood by more than a factor
    ``gain_factor`` either way (dead, stuck bright or saturated), or when its dark differs from
    its neighbourhood's median by more than ``dark_sigmas`` robust standard deviations (hot: a
    large, unstable dark current). Smooth gain variations (the heel effect, the detector's
    panels) are no defect: only the departure from the local median counts.

    Args:
        flat: flat field ``F`` (counts), or ``None`` (only the dark is checked).
        dark: dark field ``D`` (counts), or ``None`` (taken as 0 and not checked).
        gain_factor: tolerated ratio of a pixel's gain to its neighbourhood's (> 1).
        dark_sigmas: tolerated deviation of the dark from its neighbourhood, robust σ.

    Returns:
        Boolean mask, ``True`` at bad pixels.
    """
    if flat is None and dark is None:
        raise ValueError("bad pixels from the fields need a flat or a dark field")
    if not gain_factor > 1:
        raise ValueError(f"gain_factor must be > 1, got {gain_factor!r}")
    shape = np.shape(flat if flat is not None else dark)
    bad = np.zeros(shape, bool)
    gain_scale = 0.0
    if flat is not None:
        gain = np.asarray(flat, np.float64) - (0.0 if dark is None else np.asarray(dark, np.float64))
        finite = np.isfinite(gain)
        med = ndimage.median_filter(np.where(finite, gain, 0.0), size=FIELD_WINDOW, mode="mirror")
        bad |= ~(gain > 0) | ~finite
        with np.errstate(invalid="ignore"):
            bad |= (gain * gain_factor < med) | (gain > med * gain_factor)
        gain_scale = float(np.median(gain[finite])) if finite.any() else 0.0
    if dark is not None:
        d = np.asarray(dark, np.float64)
        resid = d - ndimage.median_filter(np.nan_to_num(d), size=FIELD_WINDOW, mode="mirror")
        sigma = max(_robust_sigma(resid), DARK_SIGMA_FLOOR * abs(gain_scale), np.finfo(np.float32).tiny)
        bad |= ~np.isfinite(d) | (np.abs(resid) > dark_sigmas * sigma)
    return bad


def bad_pixels_from_frames(
    projections: Float[np.ndarray, "views nv nu"],
    *,
    sigmas: float = TEMPORAL_SIGMAS,
    min_deviation: float = TEMPORAL_MIN_DEVIATION,
    stuck_fraction: float = STUCK_FRACTION,
) -> Bool[np.ndarray, "nv nu"]:
    """Dead and hot pixels found from the temporal statistics of line integrals.

    The object turns from frame to frame, a defect stays. A pixel is bad when

    * it is stuck: its standard deviation over the frames is below ``stuck_fraction`` of the
      median over its 5×5 neighbourhood (dead at zero, saturated, or frozen), or
    * its mean over the frames departs from its row neighbours **and** its column neighbours
      (1×5 and 5×1 medians) by more than ``sigmas`` robust σ of those departures and by more than
      ``min_deviation``. Requiring both directions keeps the edges and thin lines of anything
      that projects the same at every angle (a cylinder on the axis): a 1-D median keeps a step,
      and a line along one axis is kept by the median along it.

    Args:
        projections: line integrals, ``(views, nv, nu)``; needs ≥ 3 views.

    Returns:
        Boolean mask ``(nv, nu)``, ``True`` at bad pixels.
    """
    p = np.asarray(projections)
    if p.ndim != 3 or p.shape[0] < 3:
        raise ValueError(f"temporal bad-pixel detection needs a stack of >= 3 frames, got shape {p.shape}")
    mean = p.mean(axis=0, dtype=np.float64)
    std = p.std(axis=0, dtype=np.float64)
    local_std = ndimage.median_filter(std, size=FIELD_WINDOW, mode="mirror")
    stuck = std < stuck_fraction * local_std
    off = np.ones(mean.shape, bool)
    for size in ((1, FIELD_WINDOW), (FIELD_WINDOW, 1)):
        dev = mean - ndimage.median_filter(np.nan_to_num(mean), size=size, mode="mirror")
        off &= np.abs(dev) > max(sigmas * _robust_sigma(dev), min_deviation)
    return stuck | off | ~np.isfinite(mean)


def replace_bad_pixels(
    stack: Float[np.ndarray, "views nv nu"],
    bad: Bool[np.ndarray, "nv nu"],
    *,
    max_radius: int = MAX_RADIUS,
) -> Float[np.ndarray, "views nv nu"]:
    """Each bad pixel of every frame replaced by the median of its good neighbours.

    Neighbours are the (2r+1)² window around the pixel, r = 1 first; a pixel with no good pixel
    there (a cluster, a dead column pair) takes the next r, up to ``max_radius``. Only good pixels
    feed the medians, never a replaced one.

    Raises:
        ValueError: a bad pixel has no good pixel within ``max_radius``.
    """
    stack = np.asarray(stack)
    bad = np.asarray(bad, bool)
    if stack.shape[1:] != bad.shape:
        raise ValueError(f"bad-pixel mask has shape {bad.shape}, the frames {stack.shape[1:]}")
    return _replace_into(stack.copy(), bad, max_radius)


def _replace_into(out: np.ndarray, bad: np.ndarray, max_radius: int) -> np.ndarray:
    """:func:`replace_bad_pixels` in place: the medians read good pixels only, the writes go to
    bad ones, so no write is ever read."""
    rows, cols = np.nonzero(bad)
    todo = np.arange(rows.size)
    nv, nu = bad.shape
    chunk = max(1, (1 << 24) // max(1, out.shape[0] * (2 * max_radius + 1) ** 2))  # bound the gathers' memory
    for r in range(1, max_radius + 1):
        if todo.size == 0:
            break
        dr, dc = (g.ravel() for g in np.mgrid[-r:r + 1, -r:r + 1])
        keep = (dr != 0) | (dc != 0)
        dr, dc = dr[keep], dc[keep]
        left = []
        for start in range(0, todo.size, chunk):
            idx = todo[start:start + chunk]
            rr, cc = rows[idx][None] + dr[:, None], cols[idx][None] + dc[:, None]  # (n_offsets, n)
            inside = (rr >= 0) & (rr < nv) & (cc >= 0) & (cc < nu)
            rr, cc = np.clip(rr, 0, nv - 1), np.clip(cc, 0, nu - 1)
            good = inside & ~bad[rr, cc]
            found = good.any(axis=0)
            if found.any():
                vals = np.where(good[None], out[:, rr, cc], np.nan)[..., found]  # (views, n_offsets, n_found)
                out[:, rows[idx[found]], cols[idx[found]]] = np.nanmedian(vals, axis=1)
            left.append(idx[~found])
        todo = np.concatenate(left)
    if todo.size:
        r0, c0 = int(rows[todo[0]]), int(cols[todo[0]])
        raise ValueError(f"{todo.size} bad pixel(s) have no good pixel within {max_radius} pixels "
                         f"(e.g. row {r0}, column {c0}): too many bad pixels together")
    return out


def stripe_window(nu: int, size: int | None = None) -> int:
    """The ring filter's median window for ``nu`` detector columns: ``size`` made odd (the window
    centred on the pixel), or by default 1 % of the columns, at least 5 (TomoPy's choice)."""
    if size is None:
        size = max(5, nu // 100)
    if int(size) != size or size < 3:
        raise ValueError(f"ring-filter size must be an integer >= 3, got {size!r}")
    return int(size) | 1


def remove_stripes(
    projections: Float[np.ndarray, "views nv nu"],
    *,
    size: int | None = None,
) -> Float[np.ndarray, "views nv nu"]:
    """Stripes removed from each sinogram by the sorting-based method (rings in the volume).

    Vo, Atwood & Drakopoulos, "Superior techniques for eliminating ring artifacts in X-ray
    micro-tomography", Opt. Express 26(22):28396 (2018), Algorithm 3: in the sinogram of each
    detector row ``(views, nu)``, every column (one detector pixel over the views) is sorted by
    value, the sorted image is median-filtered across the columns (a window of ``size`` pixels),
    and the values go back to their views. A pixel whose response is off by an offset or a
    factor (a stripe, full or over part of the views) is brought to its neighbours' sorted
    profile; the sorting keeps the object's structure, which varies from view to view.

    Args:
        projections: line integrals, ``(views, nv, nu)``.
        size: median window across the detector columns, pixels (:func:`stripe_window`: made
            odd; default 1 % of the columns, at least 5). Removes stripes up to about
            ``size // 2`` pixels wide.

    Returns:
        The corrected line integrals, same shape and dtype.
    """
    p = np.asarray(projections)
    if p.ndim != 3:
        raise ValueError(f"projections must be (views, nv, nu), got shape {p.shape}")
    return _remove_stripes_into(p.copy(), stripe_window(p.shape[2], size))


def _remove_stripes_into(p: np.ndarray, size: int) -> np.ndarray:
    """:func:`remove_stripes` in place, a block of detector rows at a time (the sinograms of
    different rows are independent; a block is read whole before it is written)."""
    rows = max(1, (1 << 24) // max(1, p.shape[0] * p.shape[2]))  # detector rows a block (bounded memory)
    for r0 in range(0, p.shape[1], rows):
        block = p[:, r0:r0 + rows]
        order = np.argsort(block, axis=0, kind="stable")
        smooth = ndimage.median_filter(np.take_along_axis(block, order, axis=0), size=(1, 1, size), mode="reflect")
        np.put_along_axis(block, order, smooth, axis=0)
    return p


def air_level(
    frames: Real[np.ndarray, "views nv nu"],
    *,
    region: tuple[int, int, int, int] | None = None,
    border: int = 4,
    bad: Bool[np.ndarray, "nv nu"] | None = None,
) -> Float[np.ndarray, " views"]:
    r"""Each frame's level of unattenuated beam (air), in the frames' units.

    The estimate is a σ-clipped mean (Gaussian-consistent, iterated until it stops moving): the
    mean of the pixels within ±3σ of the current level. In a ``region`` the user names (all air)
    it starts from the median; automatic (``region=None``) it looks at the frame's border of
    ``border`` pixels and starts from the median and spread of the border's brightest quarter,
    so it finds the air peak as long as at least a quarter of the border sees air. A plain high
    percentile would be biased upward by the noise (the 99th percentile of N Poisson counts is
    :math:`N + 2.3\sqrt N`).

    Args:
        frames: ``(views, nv, nu)``, e.g. ``I − D`` or ``(I − D)/(F − D)``.
        region: ``(row0, row1, col0, col1)``: rows ``row0:row1`` and columns ``col0:col1``
            (half-open, as Python slices) that see air in every frame.
        border: width of the border, pixels (automatic mode).
        bad: pixels to leave out (bad pixels), ``(nv, nu)``.

    Returns:
        ``(views,)`` float64 air level of each frame.
    """
    f = np.asarray(frames)
    nv, nu = f.shape[1:]
    use = np.zeros((nv, nu), bool)
    if region is not None:
        r0, r1, c0, c1 = (int(v) for v in region)
        if not (0 <= r0 < r1 <= nv and 0 <= c0 < c1 <= nu):
            raise ValueError(f"air region rows {r0}:{r1}, columns {c0}:{c1} is empty or outside the "
                             f"{nv}x{nu} detector")
        use[r0:r1, c0:c1] = True
    else:
        b = int(border)
        if b < 1 or 2 * b >= min(nv, nu):
            raise ValueError(f"air border must be 1 to {(min(nv, nu) - 1) // 2} pixels for a {nv}x{nu} detector, got {border!r}")
        use[:] = True
        use[b:-b, b:-b] = False
    if bad is not None:
        use &= ~np.asarray(bad, bool)
    if use.sum() < 4:
        raise ValueError("the air region holds fewer than 4 good pixels")
    x = f[:, use].astype(np.float64)  # (views, n)
    if region is not None:
        level = np.median(x, axis=1)
        sigma = 1.4826 * np.median(np.abs(x - level[:, None]), axis=1)
    else:
        q75 = np.percentile(x, 75, axis=1)
        top = np.where(x >= q75[:, None], x, np.nan)
        level = np.nanmedian(top, axis=1)
        sigma = 1.4826 * np.nanmedian(np.abs(top - level[:, None]), axis=1)
    for _ in range(50):
        sigma = np.maximum(sigma, 1e-6 * np.abs(level))
        inside = np.abs(x - level[:, None]) <= 3 * sigma[:, None]
        n = inside.sum(axis=1)
        new = np.where(n > 0, (x * inside).sum(axis=1) / np.maximum(n, 1), level)
        var = (((x - new[:, None]) ** 2) * inside).sum(axis=1) / np.maximum(n - 1, 1)
        sigma = np.sqrt(var) / 0.9866  # the std of a normal truncated at ±3σ is 0.9866 σ
        if np.allclose(new, level, rtol=1e-9, atol=0):
            level = new
            break
        level = new
    return level


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessed:
    """What :func:`raw_to_line_integrals` made of the raw frames.

    Attributes:
        projections: line integrals ``(views, nv, nu)``, float32, dimensionless, in
            ``[0, -log(floor)]``.
        bad_pixels: ``(nv, nu)`` mask of the pixels replaced by their neighbours' median.
        air: ``(views,)`` air level of each frame (counts, or a ratio to the flat field when one
            was given), or ``None`` when no air region was used.
        floored: pixel values (over all frames, good pixels only) whose ratio
            ``(I − D)/(F − D)`` was not a finite number above ``floor``; set to ``-log(floor)``.
        negative: pixel values whose line integral came out negative (noise in air); set to 0.
        ring_size: median window of the ring filter, or 0 when it did not run.
    """

    projections: np.ndarray
    bad_pixels: np.ndarray
    air: np.ndarray | None
    floored: int
    negative: int
    ring_size: int

    def summary(self) -> str:
        """One line: bad pixels, clipped values, ring filter."""
        n = self.projections.size
        parts = [f"{int(self.bad_pixels.sum())} bad pixel(s) replaced",
                 f"{self.floored} value(s) ({100 * self.floored / n:.3g} %) at the transmission floor",
                 f"{self.negative} negative value(s) ({100 * self.negative / n:.3g} %) set to 0"]
        parts.append(f"ring filter size {self.ring_size}" if self.ring_size else "no ring filter")
        return ", ".join(parts)


def _field(name: str, field, shape) -> np.ndarray | None:
    if field is None:
        return None
    field = np.asarray(field, np.float64)
    if field.shape != shape:
        raise ValueError(f"{name} field is {'x'.join(map(str, field.shape))} pixels, the frames {shape[0]}x{shape[1]}")
    if not np.all(np.isfinite(field)):
        raise ValueError(f"{name} field holds NaN or infinite values")
    return field


def _gain(flat, dark, *, replaced: bool):
    """``F − D``; ValueError where it is not positive at too many pixels (or at any, unless those
    pixels are ``replaced`` as bad pixels found from the fields)."""
    gain = flat - (0.0 if dark is None else dark)
    nonpositive = ~(gain > 0)
    n = int(np.count_nonzero(nonpositive))
    what = f"flat field minus dark is zero or negative at {n} of {gain.size} pixels ({100 * n / gain.size:.3g} %)"
    if n > MAX_NONPOSITIVE_GAIN * gain.size:
        raise ValueError(f"{what}: flat and dark swapped, or not a flat field?")
    if n and not replaced:
        r, c = (int(v[0]) for v in np.nonzero(nonpositive))
        raise ValueError(f"{what}, e.g. row {r}, column {c}; bad pixels found from the fields would be replaced")
    return gain


def _frame_air(ratio, air_region, air_border: int, bad):
    """Each frame's air level (:func:`air_level`); ValueError where a frame reads no beam there."""
    if isinstance(air_region, str) and air_region != "auto":
        raise ValueError(f"air_region must be 'auto' or (row0, row1, col0, col1), got {air_region!r}")
    region = None if isinstance(air_region, str) else air_region
    air = air_level(ratio, region=region, border=air_border, bad=bad)
    if not np.all(np.isfinite(air) & (air > 0)):
        k = int(np.flatnonzero(~(np.isfinite(air) & (air > 0)))[0])
        raise ValueError(f"the air region reads no beam in frame {k} (air level {air[k]:.4g}): "
                         "a region that sees the open beam is needed")
    return air


def raw_to_line_integrals(
    frames: Real[np.ndarray, "views nv nu"],
    *,
    flat: Real[np.ndarray, "nv nu"] | None = None,
    dark: Real[np.ndarray, "nv nu"] | None = None,
    air_region: tuple[int, int, int, int] | Literal["auto"] | None = None,
    air_border: int = 4,
    bad_pixels: Literal["auto", "fields", "temporal", "both", "none"] = "auto",
    ring_filter: bool = False,
    ring_size: int | None = None,
    floor: float = 1e-5,
) -> Preprocessed:
    r"""Line integrals :math:`p = -\log\bigl((I - D)/(F - D)\bigr)` of raw intensity frames.

    Steps, in order:

    1. ``I − D`` (dark 0 when not given) over ``F − D``; without a flat field the denominator is
       each frame's air level (``air_region``). With both, the air level rescales each frame's
       ratio to 1 in air (the source's drift).
    2. Ratios that are not finite or below ``floor`` are set to ``floor`` (counted in
       ``floored``), so ``p ≤ −log(floor)``.
    3. Bad pixels (``bad_pixels``): ``"fields"`` from the flat/dark fields
       (:func:`bad_pixels_from_fields`), ``"temporal"`` from the frames
       (:func:`bad_pixels_from_frames`), ``"both"``, ``"none"``, or ``"auto"``: the fields when
       any is given, else temporal. They are replaced by their good neighbours' median
       (:func:`replace_bad_pixels`) in every frame.
    4. ``ring_filter``: stripes removed from the sinograms (:func:`remove_stripes`, Vo et al. 2018).
    5. Negative ``p`` (noise in air) set to 0 (counted in ``negative``). Last, so that the filters
       see the noise in air, and a stripe's offset there, whole.

    Args:
        frames: raw intensities ``I`` (counts), ``(views, nv, nu)``.
        flat: flat field ``F`` (counts, the mean of the open-beam frames), ``(nv, nu)``.
        dark: dark field ``D`` (counts), ``(nv, nu)``.
        air_region: ``(row0, row1, col0, col1)`` of detector pixels that see air in every frame,
            or ``"auto"`` (each frame's border, :func:`air_level`). Needed without ``flat``.
        air_border: border width for ``air_region="auto"``, pixels.
        bad_pixels: how bad pixels are found (above).
        ring_filter: run the ring (stripe) filter.
        ring_size: its median window across detector columns (default: :func:`remove_stripes`').
        floor: smallest transmission ratio kept (> 0); caps ``p`` at ``-log(floor)`` (11.5 for 1e-5).

    Returns:
        :class:`Preprocessed`.

    Raises:
        ValueError: shapes that differ; a flat field whose ``F − D`` is not positive at more
            than 1 % of the pixels (or anywhere, when bad pixels are not found from the fields);
            no flat field and no air region; an air region without signal.
    """
    i = np.asarray(frames)
    if i.ndim != 3 or 0 in i.shape:
        raise ValueError(f"frames must be a non-empty (views, nv, nu) stack, got shape {i.shape}")
    if bad_pixels not in BAD_PIXEL_MODES:
        raise ValueError(f"bad_pixels must be one of {BAD_PIXEL_MODES}, got {bad_pixels!r}")
    if not (math.isfinite(floor) and 0 < floor < 1):
        raise ValueError(f"floor must be in (0, 1), got {floor!r}")
    shape = i.shape[1:]
    flat, dark = _field("flat", flat, shape), _field("dark", dark, shape)
    if flat is None and air_region is None:
        raise ValueError("need a flat field or an air region to know the unattenuated intensity I0")
    have_fields = flat is not None or dark is not None
    use_fields = bad_pixels in ("fields", "both") or (bad_pixels == "auto" and have_fields)
    use_temporal = bad_pixels in ("temporal", "both") or (bad_pixels == "auto" and not have_fields and len(i) >= 3)
    if use_fields and not have_fields:
        raise ValueError(f"bad_pixels={bad_pixels!r} needs a flat or a dark field")

    gain = None if flat is None else _gain(flat, dark, replaced=use_fields)
    bad = bad_pixels_from_fields(flat, dark=dark) if use_fields else np.zeros(shape, bool)

    ratio = i.astype(np.float32) - (0 if dark is None else dark.astype(np.float32))
    if gain is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio /= np.where(gain > 0, gain, np.nan).astype(np.float32)
    air = None if air_region is None else _frame_air(ratio, air_region, air_border, bad)
    if air is not None:
        ratio /= air.astype(np.float32)[:, None, None]

    # In place from here: the stack is the one large array (a clinical scan holds gigabytes).
    low = ~(ratio > floor) | ~np.isfinite(ratio)  # NaN fails the comparison, +inf the second test
    ratio[low] = floor
    p = np.negative(np.log(ratio, out=ratio), out=ratio)
    if use_temporal:
        bad = bad | bad_pixels_from_frames(p)
    floored = int(np.count_nonzero(low[:, ~bad]))
    del low
    if bad.any():
        _replace_into(p, bad, MAX_RADIUS)
    size = 0
    if ring_filter:
        size = stripe_window(p.shape[2], ring_size)
        _remove_stripes_into(p, size)
    negative = p < 0
    n_negative = int(np.count_nonzero(negative))
    p[negative] = 0.0
    return Preprocessed(projections=p, bad_pixels=bad, air=air, floored=floored, negative=n_negative, ring_size=size)
