"""``probseg segment``: labels (and samples, embeddings, uncertainty, raw output) from a trained model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from probseg.cli.consensus import add_consensus_options, check_consensus_options, consensus_options, print_sweep
from probseg.cli.inputs import read_foreground, read_with_shape
from probseg.cli.options import DEVICE_HELP, FOREGROUND_HELP, add_no_cost_limit, add_overwrite, add_sample_outputs, bounded
from probseg.cli.output import check_sample_outputs, label_dtype, write_results
from probseg.cli.progress import Reporter
from probseg.cli.source import add_settings, settings_of, source_of
from probseg.core import bounds
from probseg.core.callbacks import Callbacks
from probseg.core.errors import InputError
from probseg.engine.cost import check_cost

_SAMPLE_OUTPUTS = ("samples_out", "embeddings_out", "uncertainty_out", "probability_out", "features_out")


def add_parser(sub, argv: list[str] | None) -> None:
    """The ``segment`` parser; with ``argv`` (the command line), also the settings flags of the model it names."""
    segment = sub.add_parser(
        "segment",
        help="segment an image with a trained model",
        description="Segment an image with a trained model; optionally also write the "
        "samples, the embeddings and the per-pixel uncertainty.",
    )
    segment.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'probseg train'")
    segment.add_argument("image", metavar="IMAGE", help="image to segment (tif, png, jpg, npy or zarr)")
    segment.add_argument("--out", required=True, metavar="LABELS", help="label image to write (.tif, .npy, .png, or .zarr for very large images)")
    segment.add_argument("--samples", type=bounded(bounds.SAMPLES), default=8, metavar="N", help="segmentations to draw for --samples-out, --uncertainty-out, --probability-out and --raw-out (default: 8); without those only 1 is drawn, as the labels are the first draw's")
    add_sample_outputs(segment)
    add_overwrite(segment)
    segment.add_argument("--embeddings-out", metavar="EMB", help="write the per-pixel embeddings (float32, embedding axis first)")
    segment.add_argument("--foreground-mask", metavar="MASK", help=FOREGROUND_HELP)
    segment.add_argument("--raw-out", metavar="RAW.zarr", help="also keep the network's raw output in a zarr store; 'probseg instances' turns it into labels with other settings later")
    segment.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    add_no_cost_limit(segment)
    segment.add_argument("--tile-size", type=bounded(bounds.TILE_SIZE), metavar="PX", help=f"inference window side, {bounds.TILE_SIZE.describe()}; lower it if memory runs out (default: the model's)")
    segment.add_argument("--seed", type=bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of the samples, {bounds.SEED.describe()} (default: 0)")
    segment.add_argument("--rgb", action="store_true", help="the last axis of the image holds RGB(A) colour channels")
    segment.add_argument("--channel-axis", type=int, metavar="A", help="axis of the image that holds channels")
    segment.add_argument("--stitch", choices=("none", "consensus"), default="none",
                         help="consensus: segment overlapping windows on their own and fuse them through the consensus graph (default: none)")
    segment.add_argument("--window", type=bounded(bounds.WINDOW), default=256, metavar="PX", help=f"window side for --stitch consensus, {bounds.WINDOW.describe()} (default: 256)")
    segment.add_argument("--window-overlap", type=bounded(bounds.WINDOW_OVERLAP), metavar="PX", help="overlap of neighbouring windows for --stitch consensus, 0 up to less than the window (default: half a window)")
    # --min-size is the method's own post-processing setting here.
    add_consensus_options(segment, "consensus settings (with --stitch consensus)", "--consensus-min-size")
    segment.set_defaults(handler=run, _prog=segment.prog)
    if argv is not None:
        add_settings(segment, argv, "segment")


def _check_arguments(args) -> None:
    """Refuse unusable outputs and options that do not go together, before anything is read."""
    outputs = {"out": args.out, **{key: getattr(args, key) for key in _SAMPLE_OUTPUTS}}
    check_sample_outputs(args, {"MODEL_DIR": args.model, "IMAGE": args.image}, outputs, {"raw_out": args.raw_out})
    if args.raw_out is not None and Path(args.raw_out).suffix.lower() != ".zarr":
        # Otherwise --raw-out x.tif makes a folder named x.tif (an existing one was refused above unless a store).
        raise InputError(f"--raw-out {args.raw_out}: a raw store is a zarr folder; give a name ending in .zarr")
    if args.stitch != "consensus":
        return
    if args.window_overlap is not None and args.window_overlap >= args.window:
        raise InputError(f"--window-overlap must be less than the window ({args.window} px), got {args.window_overlap}")
    extra = [f"--{k.replace('_', '-')}" for k in _SAMPLE_OUTPUTS if outputs[k]]
    if args.raw_out:
        extra.append("--raw-out")
    if extra:
        raise InputError(f"--stitch consensus writes the labels only; drop {', '.join(extra)}")
    if args.foreground_mask is not None:
        raise InputError("--stitch consensus does not take a --foreground-mask yet; drop one of them")
    check_consensus_options(args)


def _load(args):
    """The model of MODEL_DIR, with its method and config.json as read while building the parser."""
    source = source_of(args, args.model)
    if source is None:
        from probseg.engine.api import load_model

        # Reads config.json and says what is wrong with it, or which method it names that is not known.
        return load_model(args.model, device=args.device)
    return source.info.model_class.load(args.model, device=args.device, meta=source.meta)


def run(args) -> int:
    """Segment IMAGE with the model in MODEL_DIR and write the outputs asked for, holding their locks."""
    from probseg.io.lock import hold_all

    _check_arguments(args)
    outputs = {f"--{key.replace('_', '-')}": getattr(args, key) for key in ("out", "raw_out", *_SAMPLE_OUTPUTS)}
    with hold_all(outputs):
        _check_arguments(args)  # again, now that no other run can write them
        return _run(args)


def _run(args) -> int:
    settings = settings_of(args)
    image, shape = read_with_shape(args.image, args.channel_axis, args.rgb)
    foreground = read_foreground(args.foreground_mask, shape) if args.foreground_mask is not None else None
    model = _load(args)
    model.settings = model.make_settings(settings)  # a bad value fails before the network runs
    if args.embeddings_out and "embeddings" not in model.raw_maps:
        raise InputError(f"{model.method} has no embeddings to write; drop --embeddings-out")
    if args.features_out and not model.has_features:
        raise InputError(f"{model.method} has no object features to write; drop --features-out")
    if args.tile_size is not None:
        model.tile_size = args.tile_size
    if args.stitch == "consensus":
        return _segment_stitched(args, model, image)
    n_samples = _draws(args, model)
    # The refusals predict would make before the network, made here before anything is written (--raw-out).
    model.check_settings(model.settings, n_samples, foreground is not None)
    check_cost(model, shape, n_samples, Callbacks(), not args.no_cost_limit)
    return _segment(args, model, image, foreground, n_samples)


def _draws(args, model) -> int:
    """The samples to draw: the labels are draw 0's segmentation; the other draws only feed the sample
    outputs, so without those one draw is the whole (and 9x cheaper) job."""
    wants_samples = any((args.samples_out, args.uncertainty_out, args.probability_out, args.raw_out))
    return args.samples if wants_samples or not model.draws_independent(model.settings) else 1


def _segment(args, model, image, foreground, n_samples: int) -> int:
    from probseg.core.device import describe_device

    reporter = Reporter("segmenting", "tile")
    reporter.message(f"segmenting with a {model.method} model on {describe_device(model.device)}")
    callbacks = Callbacks(on_progress=reporter.progress, on_message=reporter.message)
    start = time.perf_counter()
    writer = None
    # Each draw is post-processed (and stored, with --raw-out) as it comes, so
    # only one draw's raw maps are in memory where the method allows it.
    try:
        if args.raw_out:
            from probseg.io.rawstore import RawWriter

            # An existing store (a probseg raw store, checked by guard_outputs) is
            # replaced only once the new one and the labels are written.
            writer = RawWriter(args.raw_out, model.meta(), n_samples, overwrite=args.overwrite)
        prediction = model.predict(image, n_samples, seed=args.seed, channel_axis=args.channel_axis, rgb=args.rgb,
                                   callbacks=callbacks, keep_raw=False, on_draw=writer.add if writer else None,
                                   foreground=foreground, cost_limit=not args.no_cost_limit)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reporter.close()
    source = {"model": str(Path(args.model).resolve()), "method": model.method,
              "weights_sha256": model.record.get("weights_sha256"), "image": str(Path(args.image).resolve()),
              "seed": args.seed}
    write_results(args, prediction, time.perf_counter() - start, source, model, raw_writer=writer)
    return 0


def _segment_stitched(args, model, image) -> int:
    from probseg.core.callbacks import Callbacks
    from probseg.consensus import segment_stitched
    from probseg.core.device import describe_device
    from probseg.io.images import write_image

    reporter = Reporter("segmenting windows", "window")
    reporter.message(f"segmenting windows with a {model.method} model on {describe_device(model.device)}")
    callbacks = Callbacks(on_progress=reporter.progress, on_message=reporter.message)
    start = time.perf_counter()
    try:
        result = segment_stitched(
            model, image, window=args.window, overlap=args.window_overlap, n_samples=args.samples, resolution=args.resolution,
            objective=args.objective, seed=args.seed, min_size=args.min_size, channel_axis=args.channel_axis, rgb=args.rgb,
            callbacks=callbacks, device=args.device, **consensus_options(args),
        )
    finally:
        reporter.close()
    if result.sweep is not None:
        print_sweep(result.sweep)
    labels = result.labels
    write_image(args.out, labels.astype(label_dtype(labels)), overwrite=args.overwrite)  # one file: replaced atomically
    n_objects = int(np.count_nonzero(np.unique(labels)))
    print(f"wrote {n_objects} objects from {result.n_windows} windows to {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0
