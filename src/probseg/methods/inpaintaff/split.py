"""InpaintAff's split step: regions that tell least about each other, from an inpainting network.

Wolf, Hamprecht, Funke, "Instance Separation Emerges from Inpainting" (2020),
section 2.4 and appendix A. A patch is split in two by a random horizontal
or vertical cut; for ``T`` iterations the band ``N`` of pixels near the
boundary is inpainted once from one side ``M`` and once from the other side
``M̄`` (each less the band), and every band pixel joins the side that
predicts it better. Both parts are split again, until the split of a part
leaves one side (nearly) empty. Pixel pairs in the same final part of a
patch get affinity 1, others 0; averaged over sliding patches these are
the affinities the mutex watershed partitions.

The speed-up over the paper's implementation is batching: every node of a
recursion level of every patch in a group goes through the network
together, both conditionings in the same batch. The randomness of each
patch comes from its own generator, so the result does not depend on how
patches are grouped.

Sign convention: :func:`relative_information_gain` is the paper's
``RIG(i|M) = IG(i|M) - IG(i|M̄)``; a pixel joins ``M`` where it is negative
(``M`` leaves less to learn about it). Eq. (11) prints the opposite sign,
but only this one decreases ``IGM_N`` as the text says the update does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from probseg.core.callbacks import Callbacks, ensure
from probseg.core.errors import InputError
from probseg.methods.inpaintaff.inpainting import disk_dilate
from probseg.partition.affinities import check_offsets, pair_slices

__all__ = [
    "SplitParams", "Timer", "band", "band_width", "initial_split", "relative_information_gain",
    "smooth_in_band", "crop_windows", "split_level", "split_patches", "leaves_to_affinities", "patch_starts", "inpaint_affinities",
]

#: ``predict(images (B, C, S, S), visible (B, 1, S, S)) -> (mean, logvar)``, each (B, C, S, S).
Predictor = Callable[[torch.Tensor, torch.Tensor], tuple]


@dataclass(frozen=True)
class SplitParams:
    """How each patch is split (see :func:`split_patches`).

    Attributes
    ----------
    iterations : int
        ``T``, boundary updates per split.
    max_band : int
        ``d`` of the first half of the updates (px); it then falls linearly
        to 1, and every second update uses ``d = 1`` (appendix A).
    max_depth : int
        Levels of recursion at most.
    min_part : int
        A split that leaves a side with fewer pixels than this counts as
        "one side empty": the part is final.
    min_gain : float
        A split whose band pixels gain less than this on average (nats per
        pixel, from the side they joined over the other) is no split: the
        part is final. The paper stops only when a side is empty; in a
        part of uniform texture the two sides predict the band equally
        well, the boundary wanders and neither side empties, so without
        this objects would be cut at random.
    crop_margin : int or None
        A part goes through the network in a window of its bounding box
        grown by this margin (px), not the whole patch: nothing outside a
        part is ever visible, and deep levels hold mostly small parts, so
        this saves much of their network time. The network then misses features it would have spread past
        the window's edge, so results differ slightly from whole patches.
        None: always whole patches.
    align : int
        The network's input sides must be multiples of this.
    sigmas : tuple of float
        Gaussian smoothings of the information gain added to it within the
        band (appendix A: 0.1, 1, 5, 10).
    """

    iterations: int = 8
    max_band: int = 6
    max_depth: int = 5
    min_part: int = 16
    min_gain: float = 0.5
    crop_margin: int | None = 2
    align: int = 8
    sigmas: tuple = (0.1, 1.0, 5.0, 10.0)


@dataclass
class Timer:
    """Seconds spent in the network, in the split logic and in averaging affinities."""

    network: float = 0.0
    split: float = 0.0
    averaging: float = 0.0
    passes: int = 0  # images through the network
    #: Per recursion level, how the splits ended: [a side (nearly) empty, too little gain, split].
    outcomes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"network_s": self.network, "split_s": self.split, "averaging_s": self.averaging, "passes": self.passes,
                "outcomes": {level: list(v) for level, v in sorted(self.outcomes.items())}}


def band(inside: torch.Tensor, region: torch.Tensor, d: int) -> torch.Tensor:
    """The band ``N(M, d)`` of eq. (12-13) within a region.

    Parameters
    ----------
    inside : Tensor of bool, shape (A, Y, X)
        ``M``, one side of each region's split.
    region : Tensor of bool, shape (A, Y, X)
        The part being split; ``M̄`` is ``region & ~inside``.
    d : int
        Radius (px) of the field of view ``FOV(i, d)``: the pixels at
        Euclidean distance <= d from ``i``.

    Returns
    -------
    Tensor of bool, shape (A, Y, X)
        Region pixels whose field of view holds pixels of both sides.
    """
    inside = inside & region
    return region & disk_dilate(inside, d) & disk_dilate(region & ~inside, d)


def band_width(t: int, iterations: int, max_band: int) -> int:
    """``d`` of update ``t`` (0-based): 1 on odd updates; else ``max_band`` in the first half, then falling linearly to 1."""
    if t % 2 == 1 or max_band <= 1:
        return 1
    half = iterations // 2
    if t < half:
        return int(max_band)
    span = max(1, iterations - 1 - half)
    return max(1, int(round(max_band + (1 - max_band) * (t - half) / span)))


def initial_split(region: torch.Tensor, vertical: bool) -> torch.Tensor:
    """The first ``M`` of a region: its half above a horizontal cut, or left of a vertical one.

    Pixels are ranked by row (then column) or by column (then row) and the
    first half taken, so both sides hold equally many pixels whatever the
    region's shape.
    """
    h, w = region.shape
    yy, xx = torch.meshgrid(torch.arange(h, device=region.device), torch.arange(w, device=region.device), indexing="ij")
    key = (xx * h + yy) if vertical else (yy * w + xx)
    flat = torch.where(region, key, torch.full_like(key, h * w)).flatten()
    n = int(region.sum())
    if n < 2:
        return torch.zeros_like(region)
    cut = torch.kthvalue(flat, n // 2).values
    return region & (key <= cut)


def relative_information_gain(x: torch.Tensor, mean_m: torch.Tensor, logvar_m: torch.Tensor,
                              mean_o: torch.Tensor, logvar_o: torch.Tensor, noise_var) -> torch.Tensor:
    """``RIG(i|M) = IG(i|M) - IG(i|M̄)`` per pixel, summed over channels, (B, Y, X).

    ``IG(i|M) = KL(p(x_i | Ω) || p(x_i | M))`` (eq. 3) in closed form for
    Gaussians, with ``p(x_i | Ω)`` taken as ``N(x_i, s²)``: the observed
    value with the image's noise level ``s`` (``noise_var`` = s², a number
    or (B, 1, 1, 1)). Negative where ``M`` predicts the pixel better.
    """
    var_m, var_o = torch.exp(logvar_m), torch.exp(logvar_o)
    kl_m = 0.5 * logvar_m + (noise_var + (x - mean_m) ** 2) / (2 * var_m)
    kl_o = 0.5 * logvar_o + (noise_var + (x - mean_o) ** 2) / (2 * var_o)
    return (kl_m - kl_o).sum(dim=1)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable zero-padded blur of (A, Y, X)."""
    r = len(kernel) // 2
    k = kernel.to(x.device, x.dtype)
    out = F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(out, k.view(1, 1, -1, 1), padding=(r, 0))[:, 0]


def smooth_in_band(values: torch.Tensor, inband: torch.Tensor, sigmas) -> torch.Tensor:
    """``values`` plus its Gaussian averages over the band, one per sigma (appendix A); 0 off the band.

    Each average is a normalised convolution over band pixels only (pixels
    off the band have no value), so a wide sigma gives each stretch of the
    band the sign of its neighbourhood's gain.
    """
    weight = inband.to(values.dtype)
    v = values * weight
    out = v.clone()
    for sigma in sigmas:
        if sigma < 0.3:  # a kernel narrower than a pixel is the pixel itself
            out = out + v
            continue
        kernel = _gaussian_kernel(float(sigma))
        out = out + _blur(v, kernel) / _blur(weight, kernel).clamp(min=1e-6) * weight
    return out


def _predict_chunked(predict: Predictor, images: torch.Tensor, visible: torch.Tensor, chunk: int, timer: Timer):
    start = time.perf_counter()
    means, logvars = [], []
    with torch.no_grad():
        for i in range(0, len(images), chunk):
            m, lv = predict(images[i : i + chunk], visible[i : i + chunk])
            means.append(m)
            logvars.append(lv)
    timer.network += time.perf_counter() - start
    timer.passes += len(images)
    return torch.cat(means), torch.cat(logvars)


def crop_windows(regions: torch.Tensor, params: SplitParams) -> list[tuple[int, int, int]]:
    """``(side, y0, x0)`` of the window each region goes through the network in (see ``SplitParams.crop_margin``).

    The side is the region's bounding box grown by the margin, rounded up
    to the network's alignment (at least twice it), and at most the patch.
    """
    full = regions.shape[-1]
    if params.crop_margin is None:
        return [(full, 0, 0)] * len(regions)
    rows, cols = regions.any(dim=2), regions.any(dim=1)
    step = params.align
    windows = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        ys = [i for i, v in enumerate(r) if v] or [0]
        xs = [i for i, v in enumerate(c) if v] or [0]
        extent = max(ys[-1] - ys[0], xs[-1] - xs[0]) + 1 + 2 * params.crop_margin
        side = min(full, max(2 * step, -(-extent // step) * step))
        if side == full:
            windows.append((full, 0, 0))
            continue
        cy, cx = (ys[0] + ys[-1] + 1) // 2, (xs[0] + xs[-1] + 1) // 2
        windows.append((side, min(max(0, cy - side // 2), full - side), min(max(0, cx - side // 2), full - side)))
    return windows


def _predict_windows(predict: Predictor, images: torch.Tensor, visible: torch.Tensor, windows: list, chunk: int,
                     timer: Timer) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions for whole patches, each image run through the network in its window and pasted back."""
    full = images.shape[-1]
    if all(w[0] == full for w in windows):
        return _predict_chunked(predict, images, visible, chunk, timer)
    start = time.perf_counter()
    mean = torch.zeros_like(images)
    logvar = torch.zeros_like(images)
    groups: dict = {}
    for i, w in enumerate(windows):
        groups.setdefault(w[0], []).append(i)
    timer.split += time.perf_counter() - start
    for side, index in groups.items():
        start = time.perf_counter()
        boxes = [(windows[i][1], windows[i][2]) for i in index]
        crop_img = torch.stack([images[i, :, y : y + side, x : x + side] for i, (y, x) in zip(index, boxes)])
        crop_vis = torch.stack([visible[i, :, y : y + side, x : x + side] for i, (y, x) in zip(index, boxes)])
        timer.split += time.perf_counter() - start
        m, lv = _predict_chunked(predict, crop_img, crop_vis, chunk, timer)
        start = time.perf_counter()
        for j, (i, (y, x)) in enumerate(zip(index, boxes)):
            mean[i, :, y : y + side, x : x + side] = m[j]
            logvar[i, :, y : y + side, x : x + side] = lv[j]
        timer.split += time.perf_counter() - start
    return mean, logvar


def split_level(images: torch.Tensor, regions: torch.Tensor, inside: torch.Tensor, predict: Predictor,
                params: SplitParams, noise_var: torch.Tensor, chunk: int = 64, timer: Timer | None = None,
                callbacks: Callbacks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Evolve the splits of a batch of regions for ``params.iterations`` updates (eq. 11).

    Parameters
    ----------
    images : Tensor, shape (A, C, S, S)
        The patch of each region.
    regions : Tensor of bool, shape (A, S, S)
        The parts being split.
    inside : Tensor of bool, shape (A, S, S)
        The initial ``M`` of each (within its region).
    predict : callable
        The inpainting network, see :data:`Predictor`.
    noise_var : Tensor, shape (A, 1, 1, 1)
        ``s²`` of each region's image, see :func:`relative_information_gain`.
    chunk : int
        Images per network call (both conditionings of a region count two).

    Returns
    -------
    inside : Tensor of bool, shape (A, S, S)
        The final ``M`` of each region.
    gain : Tensor, shape (A,)
        The mean information its band pixels gain, in the last update, from
        the side they joined over the other (nats; 0 without a band): how
        much better than a random cut the split is.
    """
    timer = timer if timer is not None else Timer()
    cb = ensure(callbacks)
    inside = inside & regions
    both = torch.cat([images, images])
    a = len(images)
    gain = torch.zeros(a, device=images.device)
    # Regions stay fixed while their splits move, so their windows do too.
    windows = crop_windows(regions, params) * 2
    for t in range(params.iterations):
        cb.raise_if_stopped()
        start = time.perf_counter()
        d = band_width(t, params.iterations, params.max_band)
        inband = band(inside, regions, d)
        other = regions & ~inside
        visible = torch.cat([inside & ~inband, other & ~inband])[:, None].to(images.dtype)
        timer.split += time.perf_counter() - start
        mean, logvar = _predict_windows(predict, both, visible, windows, chunk, timer)
        start = time.perf_counter()
        rig = relative_information_gain(images, mean[:a], logvar[:a], mean[a:], logvar[a:], noise_var)
        score = smooth_in_band(rig, inband, params.sigmas)
        joins = score < 0
        inside = (inside & ~inband) | (inband & joins)
        advantage = torch.where(joins, -rig, rig) * inband
        gain = advantage.sum(dim=(1, 2)) / inband.sum(dim=(1, 2)).clamp(min=1)
        timer.split += time.perf_counter() - start
    return inside, gain


def split_patches(images: torch.Tensor, valid: torch.Tensor, rngs: list, predict: Predictor, params: SplitParams,
                  noise_var: torch.Tensor, chunk: int = 64, timer: Timer | None = None,
                  callbacks: Callbacks | None = None) -> torch.Tensor:
    """The hierarchy of splits of a group of patches, as the final part of every pixel.

    Parameters
    ----------
    images : Tensor, shape (P, C, S, S)
    valid : Tensor of bool, shape (P, S, S)
        Pixels inside the image (a patch may hang over its edge, padded).
    rngs : list of numpy.random.Generator
        One per patch: each patch's cut directions come from its own
        generator, in its own order, so batching changes nothing.
    predict, params, noise_var (P, 1, 1, 1), chunk
        As :func:`split_level`.

    Returns
    -------
    Tensor of int64, shape (P, S, S)
        Final part ids (1, 2, ... per patch), 0 off the image.
    """
    timer = timer if timer is not None else Timer()
    leaves = valid.long().clone()
    next_id = [2] * len(images)
    active = [(p, 1) for p in range(len(images)) if int(valid[p].sum()) >= 2 * params.min_part]
    for level in range(params.max_depth):
        if not active:
            break
        start = time.perf_counter()
        index = torch.tensor([p for p, _ in active], device=images.device)
        ids = torch.tensor([rid for _, rid in active], device=images.device)
        regions = leaves[index] == ids[:, None, None]
        inside = torch.stack([initial_split(regions[i], vertical=bool(rngs[p].random() < 0.5))
                              for i, (p, _) in enumerate(active)])
        timer.split += time.perf_counter() - start
        final, gain = split_level(images[index], regions, inside, predict, params, noise_var[index], chunk, timer, callbacks)
        start = time.perf_counter()
        rest = regions & ~final
        n_in, n_rest = final.sum(dim=(1, 2)).tolist(), rest.sum(dim=(1, 2)).tolist()
        gain = gain.tolist()
        big = [min(n_in[i], n_rest[i]) >= params.min_part for i in range(len(active))]
        split = [i for i in range(len(active)) if big[i] and gain[i] >= params.min_gain]
        tally = timer.outcomes.setdefault(level, [0, 0, 0])
        tally[0] += len(active) - sum(big)
        tally[1] += sum(big) - len(split)
        tally[2] += len(split)
        new_active = []
        for i in split:
            p, rid = active[i]
            leaves[p][rest[i]] = next_id[p]
            # A part too small to hold two parts is final.
            new_active += [(p, r) for r, n in ((rid, n_in[i]), (next_id[p], n_rest[i])) if n >= 2 * params.min_part]
            next_id[p] += 1
        active = new_active
        timer.split += time.perf_counter() - start
    return leaves


def leaves_to_affinities(leaves: torch.Tensor, offsets) -> tuple[torch.Tensor, torch.Tensor]:
    """Affinities of a hierarchy's final parts: 1 for a pair in one part, 0 across parts.

    Parameters
    ----------
    leaves : Tensor of int, shape (P, S, S)
        Part ids, 0 for pixels off the image.
    offsets : array-like of int, shape (K, 2)

    Returns
    -------
    same, known : Tensor of float32, shape (P, K, S, S)
        ``same[p, k, y, x]`` is 1 where (y, x) and its partner at offset k
        lie in one part of patch p; ``known`` is 1 where both lie in the
        patch and on the image (elsewhere ``same`` is 0 and means nothing).
    """
    offsets = check_offsets(offsets)
    p, s, s2 = leaves.shape
    same = torch.zeros((p, len(offsets), s, s2), dtype=torch.float32, device=leaves.device)
    known = torch.zeros_like(same)
    for k, offset in enumerate(offsets):
        src, tgt = pair_slices(offset, (s, s2))
        a, b = leaves[(slice(None),) + src], leaves[(slice(None),) + tgt]
        ok = (a > 0) & (b > 0)
        known[(slice(None), k) + src] = ok.float()
        same[(slice(None), k) + src] = (ok & (a == b)).float()
    return same, known


def patch_starts(size: int, patch: int, stride: int, shift: int = 0) -> list[int]:
    """Starts of patches of side ``patch`` every ``stride`` px covering ``0..size``, the grid moved by ``shift``.

    The first patch starts at 0 and the last ends at ``size`` (or starts at 0
    when the image is smaller than a patch), so every pixel is covered.
    """
    if size <= patch:
        return [0]
    starts = {0, size - patch}
    starts.update(range(shift % stride, size - patch, stride))
    return sorted(starts)


# Seconds to split one 64 px patch with 8 boundary updates (the defaults), measured on the 2-core CPU this
# package is developed on: a 128x128 image, 9 patches a draw, took 1.7 s a draw under a load of 3 (torch with
# 2 threads). Faster machines finish sooner than the estimate says, which only makes it cautious.
SECONDS_PER_PATCH = 0.2


def cpu_seconds(shape: tuple, patch: int, stride: int, iterations: int, draws: int) -> float:
    """Predicted seconds of :func:`inpaint_affinities` on a ``(Y, X)`` image, ``draws`` times, on a CPU.

    The patches of the grid (:func:`patch_starts`, unshifted) times the draws
    times :data:`SECONDS_PER_PATCH`, scaled by the patch's pixels and the
    boundary updates per split, which the work grows with.
    """
    patches = len(patch_starts(int(shape[0]), patch, stride)) * len(patch_starts(int(shape[1]), patch, stride))
    return patches * draws * SECONDS_PER_PATCH * (patch / 64) ** 2 * (iterations / 8)


def inpaint_affinities(image: np.ndarray, predict: Predictor, *, patch: int, stride: int, offsets, params: SplitParams,
                       seed: int, shift: int = 0, patch_batch: int = 16, chunk: int = 64, noise_var: float = 0.0,
                       device="cpu", callbacks: Callbacks | None = None, timer: Timer | None = None) -> np.ndarray:
    """InpaintAff affinities of one image: split sliding patches, average their same-part pairs.

    Parameters
    ----------
    image : ndarray of float32, shape (C, Y, X)
        Normalised.
    predict : callable
        The inpainting network (:data:`Predictor`) on ``device``.
    patch, stride : int
        Side of the patches and their step (px); ``patch`` must be a
        multiple of the network's alignment.
    offsets : array-like of int, shape (K, 2)
        Pairs to report, e.g. :data:`probseg.partition.SPARSE_LONG_RANGE_OFFSETS`.
    params : SplitParams
    seed : int
        Patch ``i``'s cuts come from ``default_rng([seed, i])``.
    shift : int
        Moves the patch grid (different draws see different patches).
    patch_batch : int
        Patches split together (every level of all of them batched).
    chunk : int
        Images per network call.
    noise_var : float
        ``s²`` of :func:`relative_information_gain`.

    Returns
    -------
    ndarray of float32, shape (K, Y, X)
        The fraction of the patches holding both pixels of a pair that put
        them in one part; NaN for pairs no patch holds (partner off the
        image, or farther than a patch).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"expected a (C, Y, X) image, got shape {image.shape}")
    offsets = check_offsets(offsets)
    timer = timer if timer is not None else Timer()
    cb = ensure(callbacks)
    c, h, w = image.shape
    ys, xs = patch_starts(h, patch, stride, shift), patch_starts(w, patch, stride, shift)
    corners = [(y, x) for y in ys for x in xs]
    total = np.zeros((len(offsets), h, w), dtype=np.float64)
    count = np.zeros((len(offsets), h, w), dtype=np.float64)
    padded = np.zeros((c, max(h, patch), max(w, patch)), dtype=np.float32)
    padded[:, :h, :w] = image
    inside = np.zeros(padded.shape[1:], dtype=bool)
    inside[:h, :w] = True
    dev = torch.device(device)
    for g in range(0, len(corners), patch_batch):
        group = list(range(g, min(g + patch_batch, len(corners))))
        images = torch.from_numpy(np.stack([padded[:, y : y + patch, x : x + patch] for y, x in (corners[i] for i in group)])).to(dev)
        valid = torch.from_numpy(np.stack([inside[y : y + patch, x : x + patch] for y, x in (corners[i] for i in group)])).to(dev)
        rngs = [np.random.default_rng([seed, i]) for i in group]
        nv = torch.full((len(group), 1, 1, 1), float(noise_var), device=dev)
        leaves = split_patches(images, valid, rngs, predict, params, nv, chunk, timer, cb)
        start = time.perf_counter()
        same, known = leaves_to_affinities(leaves, offsets)
        same, known = same.cpu().numpy(), known.cpu().numpy()
        for j, i in enumerate(group):
            y, x = corners[i]
            hh, ww = min(patch, h - y), min(patch, w - x)
            total[:, y : y + hh, x : x + ww] += same[j, :, :hh, :ww]
            count[:, y : y + hh, x : x + ww] += known[j, :, :hh, :ww]
        timer.averaging += time.perf_counter() - start
        cb.progress(group[-1] + 1, len(corners))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
