"""The Predict widget's background jobs: inference, re-computing from the kept raw output, tuning.

Each job is gathered on the GUI thread into a dataclass and run on a worker
thread with a :class:`JobMonitor`; it returns an :class:`Outcome` whose value
is a :class:`PredictResult` (a tuning result for :func:`tune_job`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import probseg
from napari_probseg._engine_widget import JobMonitor, Outcome, run_engine
from probseg.core.device import resolve_device
from probseg.core.errors import Cancelled, InputError
from probseg.engine import api
from probseg.evaluation.visualize import embeddings_to_rgb


@dataclass
class PredictJob:
    """Everything an inference run needs, gathered on the GUI thread."""

    model: object
    model_name: str
    folder: object
    image: object
    rgb: bool
    image_name: str
    n_samples: int
    seed: int
    device: str
    tile_size: int
    settings: dict | None = None
    foreground: np.ndarray | None = None  # the mask, checked (bool)
    foreground_name: str | None = None  # the layer it came from


@dataclass
class PredictResult:
    """The engine's prediction plus the embeddings as colours, ready for layers."""

    prediction: object
    embeddings_rgb: np.ndarray | None
    cancelled: bool = False
    model: object = None  # the model that post-processes it (maybe a copy on another device)
    job: object = None  # the PredictJob whose network output this is
    features: dict | None = None  # the object table of the segmentation, for methods that make one
    maps: dict = field(default_factory=dict)  # the method's display maps by name


@dataclass
class RetuneJob:
    """Post-processing of a kept raw output with new settings; the network does not run."""

    model: object
    raw: object
    settings: dict
    source: object  # the PredictJob that made the raw output


@dataclass
class TuneJob:
    """A search of the post-processing settings; the ones in the form are the starting point."""

    predict: PredictJob
    labels: np.ndarray


def predict_job(job: PredictJob, monitor: JobMonitor) -> Outcome:
    """Run the network and post-process; on another device than the model's, a copy loaded there."""
    return run_engine(_predict, job, monitor)


def retune_job(job: RetuneJob, monitor: JobMonitor) -> Outcome:
    """Post-process the kept raw output with the job's settings."""
    def retune() -> PredictResult:
        try:
            pred = job.model.postprocess(job.raw, job.settings, callbacks=monitor.callbacks())
        except Cancelled:
            return PredictResult(None, None, cancelled=True)
        return _result(pred, job.model, job.source)

    return run_engine(retune)


def tune_job(job: TuneJob, monitor: JobMonitor) -> Outcome:
    """:func:`probseg.tune` from the form's settings and the widget's run options."""
    def tune():
        run = job.predict
        model = run.model
        # The settings outside the grid are the form's, and the run options the widget's.
        model.settings = model.make_settings(run.settings)
        model.tile_size = run.tile_size
        # The widget shows the estimate and has Cancel, so a long run is the user's call, not refused.
        return probseg.tune(model, np.asarray(run.image), job.labels, seed=run.seed, rgb=run.rgb, callbacks=monitor.callbacks(),
                            foreground=run.foreground, cost_limit=False)

    return run_engine(tune)


def _predict(job: PredictJob, monitor: JobMonitor) -> PredictResult:
    try:
        model = job.model
        if resolve_device(job.device) != model.device:
            if job.folder is None:
                raise InputError(f"this model exists only in memory on {model.device}; choose that device")
            # A reload is how a saved model moves between devices; the copy in
            # the store stays where it was for other runs.
            model = api.load_model(job.folder, device=job.device)
        model.tile_size = job.tile_size
        pred = model.predict(
            np.asarray(job.image), n_samples=job.n_samples, seed=job.seed, settings=job.settings, rgb=job.rgb,
            callbacks=monitor.callbacks(), foreground=job.foreground,
            cost_limit=False,  # the estimate is shown as a notice and Cancel stops the run: the user decides
        )
        return _result(pred, model, job)
    except Cancelled:
        return PredictResult(None, None, cancelled=True)


def _result(pred, model, job: PredictJob) -> PredictResult:
    rgb = None if pred.embeddings is None else embeddings_to_rgb(pred.embeddings)
    return PredictResult(pred, rgb, model=model, job=job, features=model.features(pred), maps=model.shown_maps(pred))
