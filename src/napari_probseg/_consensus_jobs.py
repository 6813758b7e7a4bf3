"""The Consensus widget's background jobs: each is one call into :mod:`probseg.consensus.interactive`.

A job runs on a worker thread with a :class:`JobMonitor` and returns an
:class:`Outcome`; a cancelled job's outcome holds None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_probseg._engine_widget import JobMonitor, Outcome, run_engine
from probseg.consensus import Consensus
from probseg.consensus import interactive
from probseg.core.errors import Cancelled


@dataclass
class BuildJob:
    """Building the graph of a samples layer, gathered on the GUI thread."""

    samples: np.ndarray
    key: tuple  # which samples these are; a build for replaced samples is dropped
    device: str
    resolution_fraction: float
    objective: str
    seed: int
    min_size: int


def build_job(job: BuildJob, monitor: JobMonitor) -> Outcome:
    """``(job.key, Built)``: the graph and the whole image at the slider's place."""
    return _cancellable(lambda: (job.key, interactive.build(
        job.samples, job.resolution_fraction, job.objective, job.seed, job.min_size, device=job.device,
        callbacks=monitor.callbacks(),
    )))


def whole_job(consensus: Consensus, resolution, objective, seed, min_size, monitor: JobMonitor) -> Outcome:
    """The labels of the whole image at ``resolution``."""
    return _cancellable(lambda: interactive.whole_image(consensus, resolution, objective, seed, min_size,
                                                        callbacks=monitor.callbacks()))


def sweep_job(consensus: Consensus, objective, seed, rect, min_size, monitor: JobMonitor) -> Outcome:
    """The sweep of resolutions on the region ``rect``."""
    return _cancellable(lambda: consensus.sweep(objective=objective, seed=seed, region=rect, min_size=min_size,
                                                callbacks=monitor.callbacks()))


def auto_whole_job(consensus: Consensus, window, max_windows, objective, seed, min_size, monitor: JobMonitor) -> Outcome:
    """A :class:`~probseg.consensus.interactive.WholeAuto`: the sweep on sampled windows and the whole image at its pick."""
    return _cancellable(lambda: interactive.auto_whole_image(consensus, window, max_windows, objective, seed, min_size,
                                                             callbacks=monitor.callbacks()))


def _cancellable(work) -> Outcome:
    try:
        return run_engine(work)
    except Cancelled:
        return Outcome(value=None)
