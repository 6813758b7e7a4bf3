"""Synthetic microscopy-like images with known instance labels.

Meant for tests, benchmarks and demos: the truth is exact, the difficulty
(density, touching, noise, uneven background) is set by parameters, and the
same seed gives the same image (for a given numpy version: NEP 19 lets
random streams change between releases).

- :func:`touching_blobs`, :data:`BACKGROUNDS` (``blobs.py``): fluorescence-like
  blobs, possibly touching, on flat, gradient or structured backgrounds;
- :func:`perturbed_samples` (``perturbed.py``): samples of a known
  segmentation with known splits, merges and shifted outlines;
- :func:`digit_scenes`, :class:`DigitScenes`, :data:`DIGIT_BACKGROUNDS`
  (``digits.py``): canvases of handwritten digits, as in D'Alessio et al.'s
  multi-MNIST experiment.
"""

from probseg.evaluation.synthetic.blobs import BACKGROUNDS, touching_blobs
from probseg.evaluation.synthetic.digits import DIGIT_BACKGROUNDS, DigitScenes, digit_scenes
from probseg.evaluation.synthetic.perturbed import perturbed_samples

__all__ = ["touching_blobs", "perturbed_samples", "digit_scenes", "DigitScenes", "BACKGROUNDS", "DIGIT_BACKGROUNDS"]
