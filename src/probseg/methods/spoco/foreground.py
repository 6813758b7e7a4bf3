"""SPOCO's background: what the foreground head learned from, and how a draw's segments lose their background.

The head is the last output channel of the embedding network, trained with
:func:`probseg.methods.spoco.loss.foreground_loss`. What its score means
depends on the training labels, so the kind is saved with the weights.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu

from probseg.core.errors import InputError

# What the foreground head learned from: objects against known background
# (its probability means what it says), or, with no background labelled,
# objects against the unlabelled pixels (positive-unlabelled: a score that
# ranks object-like pixels first, thresholded per image).
FROM_UNLABELLED, FROM_BACKGROUND = 1, 2


def foreground_cut(scores: np.ndarray, kind: int, threshold: float = 0.0) -> float:
    """The foreground score from which a pixel (known background) or a segment (otherwise) is foreground.

    ``threshold``, or by default 0.5 for a head that learned from known
    background, whose probability means what it says, and half Otsu's
    threshold of this image's scores for one that learned from objects
    against unlabelled pixels: its scores rank pixels, but their scale
    depends on the fraction of the objects labelled, and unlabelled objects
    score between background and labelled ones. (On the nuclei sample with a
    quarter of the objects, segments cut at 0.1 to 0.2 all scored alike;
    Otsu's threshold was 0.37 to 0.38, and cutting there lost dim nuclei.)

    Parameters
    ----------
    scores : ndarray of float, shape (Y, X)
        The head's probability of one draw.
    kind : int
        :data:`FROM_UNLABELLED` or :data:`FROM_BACKGROUND`.
    threshold : float
        The user's cut; 0 for the automatic one.

    Returns
    -------
    float
    """
    if threshold > 0:
        return threshold
    if kind == FROM_BACKGROUND or np.ptp(scores) < 1e-3:
        return 0.5
    return 0.5 * float(threshold_otsu(scores))


def keep_foreground(labels: np.ndarray, scores: np.ndarray, kind: int, threshold: float = 0.0) -> np.ndarray:
    """``labels`` with background set to 0, by the foreground head's scores.

    A head that learned from known background, or a cut the user set,
    decides pixel by pixel. A positive-unlabelled head decides segment by
    segment, on each segment's mean score: single pixels of such a head are
    noisy, but an object segment averages them, and its outline then comes
    from the embedding rather than from the score.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Segments, 0 unassigned.
    scores : ndarray of float, shape (Y, X)
        The head's probability of the same draw.
    kind : int
        :data:`FROM_UNLABELLED` or :data:`FROM_BACKGROUND`.
    threshold : float
        The user's cut; 0 for :func:`foreground_cut`'s automatic one.

    Returns
    -------
    ndarray of int, shape (Y, X)
    """
    cut = foreground_cut(scores, kind, threshold)
    if kind == FROM_BACKGROUND or threshold > 0:
        return np.where(scores >= cut, labels, 0)
    counts = np.bincount(labels.ravel())
    sums = np.bincount(labels.ravel(), weights=scores.ravel(), minlength=len(counts))
    keep = sums >= cut * np.maximum(counts, 1)
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def drop_background(labels: np.ndarray, rule: str, scores: np.ndarray | None, kind: int,
                    threshold: float = 0.0) -> np.ndarray:
    """``labels`` of one draw with its background set to 0.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Segments of the whole draw, the background among them.
    rule : {"auto", "foreground", "largest", "none"}
        ``"foreground"``: the head decides (:func:`keep_foreground`);
        ``"largest"``: the largest segment is the background, since the
        background of a SPOCO embedding is one cluster like an object;
        ``"none"``: every segment is kept; ``"auto"``: the head where there
        is one, else the largest segment.
    scores : ndarray of float, shape (Y, X), or None
        The head's probability of the same draw; None without a head.
    kind : int
        :data:`FROM_UNLABELLED` or :data:`FROM_BACKGROUND` (ignored without a head).
    threshold : float
        The user's cut for the head's scores; 0 for the automatic one.

    Returns
    -------
    ndarray of int, shape (Y, X)

    Raises
    ------
    InputError
        If ``rule`` is ``"foreground"`` and there is no head.
    """
    if rule == "auto":
        rule = "foreground" if scores is not None else "largest"
    if rule == "foreground":
        if scores is None:
            raise InputError("this model has no foreground head (its labels marked no background); "
                             "use background 'largest' or 'none'")
        return keep_foreground(labels, scores, kind, threshold)
    if rule == "largest" and labels.max() > 0:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return np.where(labels == sizes.argmax(), 0, labels)
    return labels
