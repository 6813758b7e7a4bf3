"""Loss functions shared by methods: object-centric embeddings, the discriminative loss and sparse object-level terms."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def oce_loss(offsets: torch.Tensor, rng: np.random.Generator, *, kappa: float, temperature: float, density: float,
             regularizer_weight: float) -> torch.Tensor:
    """The object-centric embedding loss on a batch of offset maps.

    Parameters
    ----------
    offsets : Tensor, shape (B, 2, H, W)
        Predicted offsets ``r`` in pixels; embeddings are ``e = x + r``.
    rng : numpy.random.Generator
        Draws anchors and partners, so a seed reproduces the loss.
    kappa : float
        Partners lie within this radius of their anchor (px).
    temperature : float
        ``tau`` of the bounded distance (px^2).
    density : float
        Fraction of pixels used as anchors, and of the disc as partners.
    regularizer_weight : float
        Weight of the offset length ``|r_a|``.

    Returns
    -------
    Tensor
        Sum over pairs of ``1 - exp(-|e_a - e_b|^2 / tau)`` plus
        ``regularizer_weight`` times the sum of ``|r_a|``, divided by the
        batch size (a per-crop sum, as the reference implementation sums).
        Partners ``b`` lie within ``kappa`` of anchor ``a`` and their
        embedding is held fixed (no gradient), as in the reference.
        Summing rather than averaging matters: per-pair gradients are tiny,
        and averaged over ~10^5 pairs they fall to the size of Adam's epsilon.
    """
    b, _, h, w = offsets.shape
    radius = kappa
    kappa = int(math.floor(radius))
    if h <= 2 * kappa or w <= 2 * kappa:
        raise ValueError(f"crop output {h}x{w} is too small for kappa={radius}")
    n_anchor = max(1, int(density * h * w))
    n_ref = max(1, int(round(density * math.pi * radius**2)))
    ay = rng.integers(kappa, h - kappa, size=(b, n_anchor))
    ax = rng.integers(kappa, w - kappa, size=(b, n_anchor))
    # Partners uniformly in the disc of radius kappa, never the anchor itself.
    cand = np.stack(np.meshgrid(np.arange(-kappa, kappa + 1), np.arange(-kappa, kappa + 1), indexing="ij"), -1).reshape(-1, 2)
    dist2 = (cand**2).sum(1)
    cand = cand[(dist2 > 0) & (dist2 <= radius**2)]
    pick = cand[rng.integers(len(cand), size=(b, n_anchor, n_ref))]
    ry = ay[..., None] + pick[..., 0]
    rx = ax[..., None] + pick[..., 1]
    device = offsets.device
    flat = offsets.float().reshape(b, 2, h * w)
    a_idx = torch.from_numpy(ay * w + ax).to(device)
    r_idx = torch.from_numpy((ry * w + rx).reshape(b, -1)).to(device)
    r_a = torch.gather(flat, 2, a_idx[:, None, :].expand(b, 2, n_anchor))  # (B, 2, A)
    r_b = torch.gather(flat, 2, r_idx[:, None, :].expand(b, 2, r_idx.shape[1])).detach()
    pos_a = torch.from_numpy(np.stack([ay, ax], 1)).to(device, torch.float32)  # (B, 2, A)
    pos_b = torch.from_numpy(np.stack([ry.reshape(b, -1), rx.reshape(b, -1)], 1)).to(device, torch.float32)
    e_a = (r_a + pos_a).repeat_interleave(n_ref, dim=2)
    e_b = r_b + pos_b
    d2 = ((e_a - e_b) ** 2).sum(1)
    attraction = (1.0 - torch.exp(-d2 / temperature)).sum()
    regular = r_a.norm(dim=1).sum()
    return (attraction + regularizer_weight * regular) / b


def discriminative_loss(embeddings: torch.Tensor, instances: torch.Tensor, delta_d: float, center_weight: float = 0.001) -> torch.Tensor:
    """The discriminative loss of one image, without hinge on the variance term.

    Parameters
    ----------
    embeddings : Tensor, shape (D, N)
        Embeddings of the N annotated object pixels.
    instances : Tensor of int, shape (N,)
        Their object ids (any integers).
    delta_d : float
        Means of different objects closer than this are pushed apart.
    center_weight : float
        Weight of the mean norm of the object means.

    Returns
    -------
    Tensor
        ``mean_c mean_{i in c} |x_i - mu_c|^2 + mean_{c != c'} [delta_d -
        |mu_c - mu_c'|]_+^2 + center_weight mean_c |mu_c|``; 0 without
        objects.
    """
    if instances.numel() == 0:
        return embeddings.sum() * 0.0
    _, index = torch.unique(instances, return_inverse=True)
    k = int(index.max()) + 1
    d = embeddings.shape[0]
    counts = torch.bincount(index, minlength=k).to(embeddings.dtype)
    means = torch.zeros(k, d, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, embeddings.T) / counts[:, None]
    spread = ((embeddings.T - means[index]) ** 2).sum(dim=1)
    variance = (torch.zeros(k, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, spread) / counts).mean()
    distance = embeddings.new_zeros(())
    if k > 1:
        a, b = torch.triu_indices(k, k, 1, device=embeddings.device)
        # The small constant keeps the gradient finite where two means coincide.
        gap = torch.sqrt(((means[a] - means[b]) ** 2).sum(dim=1) + 1e-8)
        distance = (F.relu(delta_d - gap) ** 2).mean()
    center = torch.sqrt((means**2).sum(dim=1) + 1e-8).mean()
    return variance + distance + center_weight * center


# -- Sparse object-level supervision (Wolny, Yu, Pape, Kreshuk, CVPR 2022) ---------------------------------------------


def soft_mask(embeddings: torch.Tensor, anchor: torch.Tensor, delta_v: float, threshold: float = 0.9) -> torch.Tensor:
    """The differentiable single-instance selection (Wolny et al. 2022) around one anchor embedding.

    Parameters
    ----------
    embeddings : Tensor, shape (D, ...)
        Pixel embeddings.
    anchor : Tensor, shape (D,)
        The anchor embedding, usually the embedding of one pixel.
    delta_v : float
        Pull margin.
    threshold : float
        The kernel threshold t of the paper (eq. 3), in (0, 1): the mask's
        value at embedding distance ``delta_v``. The paper uses 0.9 and
        finds it clearly better than 0.5 when few objects are labelled
        (its appendix A.7).

    Returns
    -------
    Tensor, shape (...)
        ``exp(d**2 * ln(t) / delta_v**2)`` with ``d`` the Euclidean distance of
        each pixel's embedding to ``anchor``: 1 at the anchor, ``t`` at
        ``delta_v``, ``t**4`` at ``2 delta_v``.
    """
    shape = (-1,) + (1,) * (embeddings.dim() - 1)
    d2 = ((embeddings - anchor.reshape(shape)) ** 2).sum(dim=0)
    return torch.exp(d2 * (math.log(threshold) / delta_v**2))


def dice_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - 2 sum(p t) / (sum(p) + sum(t))`` of two soft masks of the same shape; 0 for equal binary masks."""
    intersection = (prediction * target).sum()
    return 1.0 - (2.0 * intersection + eps) / (prediction.sum() + target.sum() + eps)


def instance_means(embeddings: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding of every instance.

    Parameters
    ----------
    embeddings : Tensor, shape (D, N)
    instances : Tensor of int, shape (N,)
        Any integer ids.

    Returns
    -------
    (Tensor (K, D), Tensor (N,))
        The means, in the order of ``torch.unique(instances)``, and each
        pixel's index into them.
    """
    _, index = torch.unique(instances, return_inverse=True)
    k = int(index.max()) + 1
    counts = torch.bincount(index, minlength=k).to(embeddings.dtype)
    sums = torch.zeros(k, embeddings.shape[0], dtype=embeddings.dtype, device=embeddings.device)
    return sums.index_add_(0, index, embeddings.T) / counts[:, None], index


def hinged_pull(embeddings: torch.Tensor, instances: torch.Tensor, delta_v: float) -> torch.Tensor:
    """The pull term of Wolny et al. 2022 (eq. 1): ``mean_k mean_{i in k} [|mu_k - e_i| - delta_v]_+^2``.

    Parameters
    ----------
    embeddings : Tensor, shape (D, N)
        Embeddings of the labelled pixels.
    instances : Tensor of int, shape (N,)
        Their instance ids.
    delta_v : float

    Returns
    -------
    Tensor
        0 without pixels.
    """
    if instances.numel() == 0:
        return embeddings.sum() * 0.0
    means, index = instance_means(embeddings, instances)
    # The small constant keeps the gradient of the norm finite at 0.
    dist = torch.sqrt(((embeddings.T - means[index]) ** 2).sum(dim=1) + 1e-8)
    per_pixel = F.relu(dist - delta_v) ** 2
    k = means.shape[0]
    counts = torch.bincount(index, minlength=k).to(embeddings.dtype)
    return (torch.zeros(k, dtype=embeddings.dtype, device=embeddings.device).index_add_(0, index, per_pixel) / counts).mean()


def mean_push(means: torch.Tensor, delta_d: float) -> torch.Tensor:
    """The push term of Wolny et al. 2022 (eq. 2): ``mean_{k != l} [2 delta_d - |mu_k - mu_l|]_+^2``.

    Parameters
    ----------
    means : Tensor, shape (K, D)
        Instance means.
    delta_d : float
        Means at least ``2 delta_d`` apart are not pushed.

    Returns
    -------
    Tensor
        0 for fewer than two means.
    """
    k = means.shape[0]
    if k < 2:
        return means.sum() * 0.0
    a, b = torch.triu_indices(k, k, 1, device=means.device)
    gap = torch.sqrt(((means[a] - means[b]) ** 2).sum(dim=1) + 1e-8)
    return (F.relu(2.0 * delta_d - gap) ** 2).mean()


def unlabelled_push(means: torch.Tensor, unlabelled: torch.Tensor, delta_d: float) -> torch.Tensor:
    """The push of the labelled clusters away from the unlabelled pixels (eq. 6).

    Parameters
    ----------
    means : Tensor, shape (K, D)
        Means of the labelled instances.
    unlabelled : Tensor, shape (D, M)
        Embeddings of the pixels of the unlabelled region.
    delta_d : float
        Unlabelled pixels further than this from a mean are not pushed.

    Returns
    -------
    Tensor
        ``mean_k mean_i [delta_d - |mu_k - e_i|]_+^2``; 0 without means or
        unlabelled pixels.
    """
    if means.shape[0] == 0 or unlabelled.shape[1] == 0:
        return means.sum() * 0.0 + unlabelled.sum() * 0.0
    d2 = ((means[:, :, None] - unlabelled[None]) ** 2).sum(dim=1)  # (K, M)
    return (F.relu(delta_d - torch.sqrt(d2 + 1e-8)) ** 2).mean()


def single_object_loss(embeddings: torch.Tensor, instances: torch.Tensor, anchors: torch.Tensor,
                       delta_v: float, threshold: float = 0.9) -> torch.Tensor:
    """The instance term of Wolny et al. 2022 (eq. 4): the Dice loss of each object's soft mask against its mask.

    Parameters
    ----------
    embeddings : Tensor, shape (D, Y, X)
        Embeddings of a whole crop.
    instances : Tensor of int, shape (Y, X)
        Object id per pixel; ids not in ``anchors``' objects are "not this
        object" for every soft mask (in the positive-unlabelled setting an
        annotated object's mask is complete, so that is true of unlabelled
        pixels too).
    anchors : Tensor of int, shape (K, 3)
        ``(id, y, x)``: one anchor pixel inside each object to select.
    delta_v, threshold : float
        Of :func:`soft_mask`.

    Returns
    -------
    Tensor
        Mean over the K objects of ``dice_loss(soft_mask(e, e[y, x]), instances == id)``;
        0 for K = 0.
    """
    if len(anchors) == 0:
        return embeddings.sum() * 0.0
    terms = []
    for obj, y, x in anchors.tolist():
        mask = soft_mask(embeddings, embeddings[:, y, x], delta_v, threshold)
        terms.append(dice_loss(mask, (instances == obj).to(mask.dtype)))
    return torch.stack(terms).mean()


def consistency_loss(f_embeddings: torch.Tensor, g_embeddings: torch.Tensor, region: np.ndarray, delta_v: float,
                     rng: np.random.Generator, max_anchors: int, threshold: float = 0.9) -> torch.Tensor:
    """The embedding consistency of Wolny et al. 2022 (eq. 7) between two networks' embeddings of one crop.

    Anchors are drawn one by one among the pixels of ``region`` that no
    earlier anchor's masks cover (a mask covers the pixels where it exceeds
    0.5), until the region is covered or ``max_anchors`` are drawn. For each
    anchor the soft masks of ``f`` and ``g`` around the anchor's own
    embedding in each are compared with the Dice loss; ``g`` is the target
    and gets no gradient.

    Parameters
    ----------
    f_embeddings, g_embeddings : Tensor, shape (D, Y, X)
        The same pixels seen by f (trained) and g (its momentum copy).
    region : ndarray of bool, shape (Y, X)
        The unlabelled region.
    delta_v : float
    threshold : float
        Of :func:`soft_mask`.
    rng : numpy.random.Generator
    max_anchors : int

    Returns
    -------
    Tensor
        Mean Dice loss over the anchors; 0 for an empty region.
    """
    g_embeddings = g_embeddings.detach()
    uncovered = np.array(region, dtype=bool)
    terms = []
    while uncovered.any() and len(terms) < max_anchors:
        ys, xs = np.nonzero(uncovered)
        i = int(rng.integers(len(ys)))
        y, x = int(ys[i]), int(xs[i])
        sf = soft_mask(f_embeddings, f_embeddings[:, y, x], delta_v, threshold)
        sg = soft_mask(g_embeddings, g_embeddings[:, y, x], delta_v, threshold)
        terms.append(dice_loss(sf, sg))
        covered = ((sf.detach() > 0.5) | (sg > 0.5)).cpu().numpy()
        uncovered &= ~covered
        uncovered[y, x] = False  # a degenerate mask must not draw the same anchor forever
    if not terms:
        return f_embeddings.sum() * 0.0
    return torch.stack(terms).mean()
