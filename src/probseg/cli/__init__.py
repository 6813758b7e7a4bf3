"""The ``probseg`` command line.

::

    probseg train cellulus image.tif --out models/nuclei --object-size 24 --steps 500
    probseg segment models/nuclei image.tif --out labels.tif --uncertainty-out uncertainty.tif
    probseg consensus samples.tif --resolution auto --out consensus.tif
    probseg evaluate labels.tif ground_truth.tif
    probseg info models/nuclei
    probseg methods

Each method's hyperparameters become flags of ``probseg train METHOD``; they
are generated from the method's Config, so a new field needs no CLI code.

Anything the user can get wrong ends in one line, ``probseg: error: ...``, on
stderr and a non-zero exit status, never a traceback: 2 for a malformed
command line, 1 for unusable inputs or failures, 130 for Ctrl-C. Set the
environment variable ``PROBSEG_DEBUG=1`` to see the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

import probseg
from probseg.core import bounds
from probseg.core.errors import Cancelled, InputError, ProbsegError

PROG = "probseg"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps (default: %(default)s)"


class _UsageError(Exception):
    """A malformed command line; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line without the usage block."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# -- progress and notices ---------------------------------------------------------------


class _Reporter:
    """Turns engine callbacks into a tqdm bar and notices on stderr."""

    def __init__(self, description: str, unit: str):
        self.description = description
        self.unit = unit
        self.bar = None
        self.step = 0
        self.total = 0

    def progress(self, step: int, total: int, loss: float | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        elif total != self.bar.total or step < self.bar.n:
            # Inference restarts its count for every plane of a stack.
            self.bar.reset(total=total)
        self.bar.update(step - self.bar.n)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.step, self.total = step, total

    def message(self, text: str) -> None:
        from tqdm import tqdm

        # tqdm.write clears and redraws the bar so notices do not garble it.
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _StopOnSigint:
    """Context manager: the first Ctrl-C asks the job to stop, a second one aborts.

    Outside the main thread (signals cannot be caught there) it does nothing
    and Ctrl-C keeps its default behaviour.
    """

    def __init__(self):
        self.requested = threading.Event()
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.requested.is_set():
            raise KeyboardInterrupt
        # Only set a flag: printing from a signal handler can re-enter a
        # stream that is being written to. The notice is printed from
        # should_stop, which the training loop polls before every step.
        self.requested.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False


# -- argument parsing -------------------------------------------------------------------


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _field_help(spec) -> str:
    """Help text of a config field: doc, unit, range, default."""
    details = []
    if spec.unit:
        details.append(spec.unit)
    if spec.minimum is not None and spec.maximum is not None:
        details.append(f"{_number(spec.minimum)} to {_number(spec.maximum)}")
    elif spec.minimum is not None:
        details.append(f"at least {_number(spec.minimum)}")
    elif spec.maximum is not None:
        details.append(f"at most {_number(spec.maximum)}")
    default = str(spec.default).lower() if spec.type is bool else _number(spec.default)
    details.append(f"default {default}")
    # argparse %-formats help strings; a literal % in a doc would break it.
    return f"{spec.doc} ({'; '.join(details)})".replace("%", "%%")


def _field_metavar(spec) -> str:
    if spec.type is bool:
        return "{true,false}"
    if spec.choices:
        return "{" + ",".join(map(str, spec.choices)) + "}"
    return spec.type.__name__.upper()


def _add_fields(parser, config_class, title: str, dest: str) -> list[str]:
    """Add one flag per field of ``config_class``; return the flags."""
    from probseg.core.config import fields_of

    basic = parser.add_argument_group(title)
    advanced = parser.add_argument_group(f"advanced {title}")
    flags = []
    for spec in fields_of(config_class):
        group = advanced if spec.advanced else basic
        # Values stay strings here and are converted by probseg.core.config.parse_value
        # after parsing, so type errors read the same as in the napari widget.
        group.add_argument(
            spec.flag,
            dest=f"{dest}{spec.name}",
            metavar=_field_metavar(spec),
            choices=[str(c) for c in spec.choices] if spec.choices else None,
            default=None,
            help=_field_help(spec),
        )
        flags.append(spec.flag)
    return flags


def _field_values(args, config_class, dest: str) -> dict:
    """The fields of ``config_class`` given on the command line, converted to their types."""
    from probseg.core.config import fields_of, parse_value

    values = {}
    for spec in fields_of(config_class):
        text = getattr(args, f"{dest}{spec.name}", None)
        if text is not None:
            values[spec.name] = parse_value(spec, text)
    return values


def _add_method_parser(methods_sub, info, common) -> None:
    parser = methods_sub.add_parser(
        info.name,
        parents=[common],
        help=info.summary,
        description=f"Train {info.title}: {info.summary}. Reference: {info.reference}.",
    )
    if "label_mode" in {f.name for f in dataclasses.fields(info.config_class)}:
        parser.add_argument("--reviewed", nargs="+", metavar="MASK",
                            help="the reviewed masks the proofreading export writes beside the labels (*_reviewed), one per "
                                 "labels file; 0 labels inside a mask are known background (sets --label-mode reviewed)")
    flags = [a for action in parser._actions for a in action.option_strings]
    flags += _add_fields(parser, info.config_class, f"{info.title} settings", "cfg_")
    parser.set_defaults(handler=_cmd_train, _prog=parser.prog, _flags=flags)


def _method_of_folder(argv: list[str], command: str) -> str | None:
    """The method of the model folder or raw store named after ``command`` on the command line, if any."""
    import json as _json

    words = argv[argv.index(command) + 1 :] if command in argv else []
    for word in words:
        if word.startswith("-"):
            continue
        folder = Path(word)
        try:
            if (folder / "config.json").is_file():
                return str(_json.loads((folder / "config.json").read_text()).get("method"))
            if (folder / "zarr.json").is_file():
                from probseg.io.rawstore import store_method

                return store_method(folder)
        except (OSError, ValueError, AttributeError):
            return None
    return None


def _add_settings(parser, argv: list[str], command: str) -> None:
    """Flags for the post-processing settings of the method named by the model or store on the command line."""
    from probseg import methods

    name = _method_of_folder(argv, command)
    try:
        info = methods.get(name) if name else None
    except InputError:
        info = None
    if info is not None:
        flags = _add_fields(parser, info.settings_class, f"{info.title} post-processing settings", "set_")
        parser.set_defaults(_flags=flags, _settings_class=info.settings_class)
    else:
        what = "RAW.zarr names a raw store" if command == "instances" else "MODEL_DIR names a model"
        parser.epilog = f"The post-processing settings of the method become flags once {what}."


def _train_common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("images", nargs="+", metavar="IMAGE", help="images to learn from (tif, png, jpg, npy or zarr)")
    common.add_argument("--out", required=True, metavar="DIR", help="model folder to write (created if missing)")
    common.add_argument("--overwrite", action="store_true", help="replace the model in --out if there is one")
    common.add_argument("--labels", nargs="+", metavar="LABELS", help="instance labels, one per image, for methods that use them")
    common.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    common.add_argument("--seed", type=_bounded(bounds.SEED), default=0, metavar="S", help=f"random seed, {bounds.SEED.describe()}; same seed and device give the same model (default: 0)")
    common.add_argument(
        "--checkpoint-every", type=_bounded(bounds.CHECKPOINT_EVERY), default=0, metavar="N", help="also save the model every N steps (0: only at the end)"
    )
    common.add_argument("--rgb", action="store_true", help="the last axis of each image holds RGB(A) colour channels")
    common.add_argument("--channel-axis", type=int, metavar="A", help="axis of each image that holds channels")
    return common


def _bounded(bound: bounds.Bound):
    """An argparse type: a number within ``bound``, refused while parsing, before any work."""

    def parse(text: str):
        try:
            value = int(text) if bound.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if bound.integer else 'a number'}, got {text!r}") from None
        try:
            return bound.check("value", value)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value must", "must", 1)) from None

    return parse


def _resolution(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


def _rect(text: str):
    parts = text.replace(" ", "").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected four integers y0,x0,y1,x1, got {text!r}")
    return tuple(values)


def _add_consensus_options(parser: argparse.ArgumentParser, title: str, min_size_flag: str = "--min-size") -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--resolution", type=_resolution, default="auto", metavar="R|auto",
                       help=f"Leiden resolution; higher splits more; cpm: {bounds.RESOLUTION_CPM.describe()}, rb: {bounds.RESOLUTION_RB.describe()}; 'auto' picks the one whose consensus agrees best (mean NMI) with the labelings (default: auto)")
    group.add_argument("--objective", choices=("cpm", "rb"), default="cpm",
                       help="cpm: constant Potts model, a resolution means the same on any image size; rb: modularity with resolution (default: cpm)")
    group.add_argument(min_size_flag, dest="min_size", type=_bounded(bounds.MIN_SIZE), default=0, metavar="PX", help=f"objects with fewer pixels become background, {bounds.MIN_SIZE.describe()} (default: 0)")
    group.add_argument("--radius", type=_bounded(bounds.RADIUS), default=4, metavar="PX", help=f"pixels at most this far apart are linked in the graph, {bounds.RADIUS.describe()} (default: 4)")
    group.add_argument("--min-weight", type=_bounded(bounds.MIN_WEIGHT), default=0.01, metavar="W", help=f"links weaker than this fraction are dropped, {bounds.MIN_WEIGHT.describe()} (default: 0.01)")
    group.add_argument("--min-foreground", type=_bounded(bounds.MIN_FOREGROUND), default=0.5, metavar="F",
                       help=f"fraction of the labelings that must call a pixel foreground, {bounds.MIN_FOREGROUND.describe()} (default: 0.5)")
    group.add_argument("--backend", choices=("igraph", "leidenalg"), default="igraph",
                       help="Leiden implementation: igraph's (fast) or leidenalg (reference) (default: igraph)")


def _add_sample_outputs(parser: argparse.ArgumentParser) -> None:
    """The optional outputs made from the samples, shared by ``segment`` and ``instances``."""
    parser.add_argument("--samples-out", metavar="SAMPLES", help="write the sampled label images, stacked on a first axis")
    parser.add_argument("--uncertainty-out", metavar="UNC", help="write the per-pixel uncertainty of the samples (float32, 0 to 1)")
    parser.add_argument("--probability-out", metavar="PROB", help="write each pixel's object probability over the samples (float32, 0 to 1)")
    parser.add_argument("--features-out", metavar="CSV", help="write a table of the objects, one row per label (cellsegmenter: latent codes, box, presence, size)")


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist already (inputs are never replaced)")


def build_parser(command: str | None = None, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser.

    Parameters
    ----------
    command : str, optional
        The subcommand about to be run. Only for ``"train"`` are the methods
        imported to generate their flags; the other commands then start
        without importing torch.
    argv : list of str, optional
        The command line; the model
        folder (or raw store) it names decides which post-processing flags exist
        for ``segment`` and ``instances``.
    """
    argv = list(argv or [])
    parser = _Parser(
        prog=PROG,
        description="Probabilistic instance segmentation of microscopy images.",
        epilog="Run 'probseg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {probseg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a model on images",
        description="Train a model on the images to segment and save it to a folder. "
        "Ctrl-C stops training after the current step and saves the model so far.",
    )
    train.set_defaults(_prog=train.prog)
    if command == "train":
        from probseg import methods

        methods_sub = train.add_subparsers(dest="method", metavar="METHOD", required=True, parser_class=_Parser)
        common = _train_common()
        for name in methods.available():
            _add_method_parser(methods_sub, methods.get(name), common)

    segment = sub.add_parser(
        "segment",
        help="segment an image with a trained model",
        description="Segment an image with a trained model; optionally also write the "
        "samples, the embeddings and the per-pixel uncertainty.",
    )
    segment.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'probseg train'")
    segment.add_argument("image", metavar="IMAGE", help="image to segment (tif, png, jpg, npy or zarr)")
    segment.add_argument("--out", required=True, metavar="LABELS", help="label image to write (.tif, .npy, .png, or .zarr for very large images)")
    segment.add_argument("--samples", type=_bounded(bounds.SAMPLES), default=8, metavar="N", help="segmentations to draw for --samples-out, --uncertainty-out, --probability-out and --raw-out (default: 8); without those only 1 is drawn, as the labels are the first draw's")
    _add_sample_outputs(segment)
    _add_overwrite(segment)
    segment.add_argument("--embeddings-out", metavar="EMB", help="write the per-pixel embeddings (float32, embedding axis first)")
    segment.add_argument("--foreground-mask", metavar="MASK", help=FOREGROUND_HELP)
    segment.add_argument("--raw-out", metavar="RAW.zarr", help="also keep the network's raw output in a zarr store; 'probseg instances' turns it into labels with other settings later")
    segment.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    segment.add_argument("--tile-size", type=_bounded(bounds.TILE_SIZE), metavar="PX", help=f"inference window side, {bounds.TILE_SIZE.describe()}; lower it if memory runs out (default: the model's)")
    segment.add_argument("--seed", type=_bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of the samples, {bounds.SEED.describe()} (default: 0)")
    segment.add_argument("--rgb", action="store_true", help="the last axis of the image holds RGB(A) colour channels")
    segment.add_argument("--channel-axis", type=int, metavar="A", help="axis of the image that holds channels")
    segment.add_argument("--stitch", choices=("none", "consensus"), default="none",
                         help="consensus: segment overlapping windows on their own and fuse them through the consensus graph (default: none)")
    segment.add_argument("--window", type=_bounded(bounds.WINDOW), default=256, metavar="PX", help=f"window side for --stitch consensus, {bounds.WINDOW.describe()} (default: 256)")
    segment.add_argument("--window-overlap", type=_bounded(bounds.WINDOW_OVERLAP), metavar="PX", help="overlap of neighbouring windows for --stitch consensus, 0 up to less than the window (default: half a window)")
    # --min-size is the method's own post-processing setting here.
    _add_consensus_options(segment, "consensus settings (with --stitch consensus)", "--consensus-min-size")
    segment.set_defaults(handler=_cmd_segment, _prog=segment.prog)
    if command == "segment":
        _add_settings(segment, argv, "segment")

    instances = sub.add_parser(
        "instances",
        help="labels from a stored raw output, without the network",
        description="Turn the raw output kept by 'probseg segment --raw-out' into labels, with any post-processing "
        "settings; the network does not run and the model's weights are not needed.",
    )
    instances.add_argument("raw", metavar="RAW.zarr", help="raw store written by 'probseg segment --raw-out'")
    instances.add_argument("--out", required=True, metavar="LABELS", help="label image to write (.tif, .npy, .png, or .zarr for very large images)")
    instances.add_argument("--foreground-mask", metavar="MASK", help=FOREGROUND_HELP + "; replaces any mask stored with the raw output")
    _add_sample_outputs(instances)
    _add_overwrite(instances)
    instances.set_defaults(handler=_cmd_instances, _prog=instances.prog)
    if command == "instances":
        _add_settings(instances, argv, "instances")

    tune = sub.add_parser(
        "tune",
        help="tune a model's post-processing on a labelled image",
        description="Try the method's post-processing settings on a labelled image (the network runs once), print "
        "F1 and AP_dsb for each, and store the best in the model folder so that the next prediction uses them.",
    )
    tune.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'probseg train'")
    tune.add_argument("image", metavar="IMAGE", help="an image the model did not train on, if you have one")
    tune.add_argument("labels", metavar="LABELS", help="its instance labels")
    tune.add_argument("--dry-run", action="store_true", help="only print the table; store nothing")
    tune.add_argument("--seed", type=_bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of the network pass, {bounds.SEED.describe()} (default: 0)")
    tune.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    tune.add_argument("--rgb", action="store_true", help="the last axis of the image holds RGB(A) colour channels")
    tune.add_argument("--channel-axis", type=int, metavar="A", help="axis of the image that holds channels")
    tune.set_defaults(handler=_cmd_tune, _prog=tune.prog)

    consensus = sub.add_parser(
        "consensus",
        help="one segmentation from several (samples)",
        description="Fuse several segmentations of one image into a consensus: a graph links nearby "
        "pixels by how often the samples put them in one object, and Leiden splits it into objects.",
    )
    consensus.add_argument("samples", metavar="SAMPLES", help="(n, Y, X) integer label images, e.g. from 'probseg segment --samples-out'")
    consensus.add_argument("--out", required=True, metavar="LABELS", help="consensus label image to write (.tif, .npy, .png or .zarr)")
    _add_overwrite(consensus)
    consensus.add_argument("--region", type=_rect, metavar="Y0,X0,Y1,X1", help="only re-segment this rectangle (rows y0..y1-1, columns x0..x1-1)")
    consensus.add_argument("--into", metavar="LABELS", help="with --region: labels to copy outside the rectangle (default: background)")
    consensus.add_argument("--sweep-out", metavar="CSV", help="write the resolution sweep (resolution, mean NMI, objects) of --resolution auto")
    consensus.add_argument("--seed", type=_bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of Leiden, {bounds.SEED.describe()} (default: 0)")
    consensus.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    _add_consensus_options(consensus, "consensus settings")
    consensus.set_defaults(handler=_cmd_consensus, _prog=consensus.prog)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a segmentation against ground truth",
        description="Compare a predicted label image with a ground-truth label image and print "
        "one JSON object: f1 (IoU > 0.5), seg, ap_dsb, n_pred, n_gt, count_error.",
    )
    evaluate.add_argument("pred", metavar="PRED", help="predicted label image")
    evaluate.add_argument("gt", metavar="GT", help="ground-truth label image of the same shape")
    evaluate.set_defaults(handler=_cmd_evaluate, _prog=evaluate.prog)

    info = sub.add_parser("info", help="describe a saved model", description="Describe a model folder without loading its weights.")
    info.add_argument("model", metavar="MODEL_DIR", help="model folder")
    info.add_argument("--json", action="store_true", help="print the model's config.json instead")
    info.set_defaults(handler=_cmd_info, _prog=info.prog)

    listing = sub.add_parser("methods", help="list the available methods", description="List the available methods.")
    listing.set_defaults(handler=_cmd_methods, _prog=listing.prog)
    return parser


def _command_of(argv: list[str]) -> str | None:
    # The first word that is not an option names the command (there are no
    # global options taking values).
    return next((a for a in argv if not a.startswith("-")), None)


def _unrecognized(args, extra: list[str]) -> _UsageError:
    message = f"unrecognized argument(s): {' '.join(extra)}"
    flags = getattr(args, "_flags", None)
    first = next((a.split("=", 1)[0] for a in extra if a.startswith("--")), None)
    if flags and first:
        # Users type --object_size for --object-size; say which flag was meant.
        close = difflib.get_close_matches(first.replace("_", "-"), flags, n=1)
        if close:
            message += f"; did you mean {close[0]}?"
    return _UsageError(f"{message} (see '{getattr(args, '_prog', PROG)} --help')")


# -- commands -----------------------------------------------------------------------------


def _read_checked(path: str, channel_axis=None, rgb=False) -> np.ndarray:
    """Read an image and check it now, so errors name the file and come early."""
    return _read_with_shape(path, channel_axis, rgb)[0]


def _read_with_shape(path: str, channel_axis=None, rgb=False) -> tuple[np.ndarray, tuple]:
    """:func:`_read_checked` and the image's spatial shape, ``(Y, X)`` or ``(Z, Y, X)``."""
    from probseg.core.inputs import to_planes
    from probseg.io.images import read_image

    image = read_image(path)
    planes = to_planes(image, channel_axis=channel_axis, rgb=rgb, name=str(path))
    shape = ((planes.data.shape[0],) if planes.is_stack else ()) + planes.spatial_shape
    return image, shape


def _read_foreground(path: str, shape: tuple) -> np.ndarray:
    """The ``--foreground-mask``, checked against the image's spatial ``shape``; errors name the file."""
    from probseg.partition.foreground import as_mask
    from probseg.io.images import read_image

    try:
        return as_mask(read_image(path), shape)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"--foreground-mask {path}: {message}") from None


FOREGROUND_HELP = ("foreground mask of the image: objects are only found inside it. Labels or a boolean mask "
                   "(foreground > 0), a probability map in 0..1 (foreground >= 0.5, e.g. exported from ilastik) or other "
                   "numbers (foreground > 0); a (Y, X) mask applies to every plane of a stack")


def _check_model_folder(args) -> Path:
    """The model folder of ``train --out``, refused if it would replace inputs or, without --overwrite, a model."""
    from probseg.io.checkpoint import CONFIG_NAME, WEIGHTS_NAME
    from probseg.engine.model import SETTINGS_NAME
    from probseg.io.outputs import check_outputs

    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file; give a folder for the model")
    inputs = {f"IMAGE {i + 1}": p for i, p in enumerate(args.images)}
    inputs.update({f"LABELS {i + 1}": p for i, p in enumerate(args.labels or [])})
    inputs.update({f"MASK {i + 1}": p for i, p in enumerate(_reviewed(args))})
    # The folder itself may exist (and may even hold the images); the files a
    # model consists of must not be inputs.
    check_outputs(inputs, {"--out": folder}, overwrite=True)
    check_outputs(inputs, {f"--out {folder}/{name}": folder / name for name in (CONFIG_NAME, WEIGHTS_NAME, SETTINGS_NAME)},
                  overwrite=True)
    if (folder / CONFIG_NAME).exists() and not args.overwrite:
        raise InputError(f"--out {folder} holds a model already; add --overwrite to replace it, or choose another folder")
    return folder


def _prepare_model_folder(folder: Path, reporter: _Reporter) -> Path:
    if (folder / "config.json").exists():
        reporter.message(f"replacing the model in {folder} (--overwrite)")
    # Creating the folder before training, but only once the inputs proved
    # usable, finds an unwritable place at once rather than after hours of
    # training, and a failed start leaves nothing behind.
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write to {folder}: permission denied")
    return folder


def _reviewed(args) -> list:
    """The ``--reviewed`` masks, for methods with that flag; [] otherwise."""
    return getattr(args, "reviewed", None) or []


def _cmd_train(args) -> int:
    from probseg import methods
    from probseg.engine import api
    from probseg.core.callbacks import Callbacks
    from probseg.core.device import resolve_device
    from probseg.io.images import read_image

    info = methods.get(args.method)
    values = _field_values(args, info.config_class, "cfg_")
    if _reviewed(args):
        if values.get("label_mode", "reviewed") != "reviewed":
            raise InputError(f"--reviewed marks known background, which --label-mode {values['label_mode']} would ignore; "
                             "drop --label-mode or use reviewed")
        values["label_mode"] = "reviewed"
    # Validate settings before reading images, so a typo fails in a second.
    config = api.make_config(info.name, values)
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be 0 or more, got {args.checkpoint_every}")
    folder = _check_model_folder(args)
    images = [_read_checked(p, args.channel_axis, args.rgb) for p in args.images]
    labels = [read_image(p) for p in args.labels] if args.labels else None
    if labels is not None and len(labels) != len(images):
        raise InputError(f"{len(images)} image(s) but {len(labels)} label image(s); give one labels file per image")
    if _reviewed(args):
        from probseg.core.labels import reviewed_labels

        if labels is None or len(args.reviewed) != len(labels):
            raise InputError(f"--reviewed needs one mask per labels file: {len(labels or [])} labels, {len(args.reviewed)} mask(s)")
        labels = [reviewed_labels(lab, read_image(m), config.background_id) for lab, m in zip(labels, args.reviewed)]
    resolve_device(args.device)  # an unusable --device fails before any folder is made
    reporter = _Reporter("training", "step")
    created = not folder.exists()
    _prepare_model_folder(folder, reporter)

    stop = _StopOnSigint()
    announced = []

    def should_stop() -> bool:
        if stop.requested.is_set() and not announced:
            announced.append(True)
            reporter.message("stopping after this step and saving the model so far (Ctrl-C again quits without saving)")
        return stop.requested.is_set()

    def on_checkpoint(path) -> None:
        # The loop also saves at the end; only the periodic saves are news.
        if reporter.step < reporter.total and not stop.requested.is_set():
            reporter.message(f"checkpoint at step {reporter.step} saved to {path}")

    callbacks = Callbacks(
        on_progress=reporter.progress, should_stop=should_stop, on_checkpoint=on_checkpoint, on_message=reporter.message
    )
    try:
        with stop:
            model = api.train(
                info.name, images, labels, config, device=args.device, seed=args.seed, callbacks=callbacks,
                out=folder, checkpoint_every=args.checkpoint_every, channel_axis=args.channel_axis, rgb=args.rgb,
            )
    except BaseException:
        # A run that failed before its first save should not leave an empty
        # folder that looks like a model.
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    finally:
        reporter.close()
    log = model.train_log
    done, total, seconds = log.get("steps_done", 0), log.get("steps_total", 0), log.get("seconds", 0.0)
    if log.get("cancelled"):
        print(f"{PROG}: cancelled; the partial model ({done} of {total} steps) is saved in {folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"saved {info.title} model to {folder} ({done} step{'' if done == 1 else 's'}, {seconds:.1f} s)")
    return 0


def _label_dtype(labels: np.ndarray):
    # uint16 is what most viewers and Fiji open; more objects need uint32.
    return np.uint16 if labels.size == 0 or labels.max() < 65536 else np.uint32


def _settings_of(args) -> dict:
    cls = getattr(args, "_settings_class", None)
    return _field_values(args, cls, "set_") if cls is not None else {}


def _write_results(args, prediction, seconds: float, source: dict, model=None) -> None:
    """Write the labels (with their JSON sidecar) and whichever of samples, embeddings, uncertainty and
    probability were asked for."""
    from probseg.io.atomic import write_json
    from probseg.core.config import config_to_dict
    from probseg.io.images import write_image
    from probseg.core.record import labels_sidecar

    segmentation = prediction.segmentation
    n_objects = int(np.count_nonzero(np.unique(segmentation)))
    write_image(args.out, segmentation.astype(_label_dtype(segmentation)), overwrite=args.overwrite)
    write_json(labels_sidecar(args.out), {
        **source, "settings": config_to_dict(prediction.settings), "n_samples": int(prediction.samples.shape[0]),
        "objects": n_objects, "probseg": probseg.__version__,
    })
    print(f"wrote {n_objects} objects to {args.out} ({seconds:.1f} s)")
    if getattr(args, "samples_out", None):
        samples = prediction.samples
        write_image(args.samples_out, samples.astype(_label_dtype(samples)), overwrite=args.overwrite)
        print(f"wrote {samples.shape[0]} samples to {args.samples_out}")
    if getattr(args, "embeddings_out", None):
        # The property stacks a fresh copy on every access; take it once.
        embeddings = prediction.embeddings
        if embeddings is None:
            raise InputError("this method has no embeddings to write; drop --embeddings-out")
        write_image(args.embeddings_out, embeddings.astype(np.float32, copy=False), overwrite=args.overwrite)
        print(f"wrote embeddings {embeddings.shape} to {args.embeddings_out}")
        del embeddings
    if getattr(args, "uncertainty_out", None):
        write_image(args.uncertainty_out, prediction.uncertainty.astype(np.float32, copy=False), overwrite=args.overwrite)
        print(f"wrote uncertainty to {args.uncertainty_out}")
    if getattr(args, "probability_out", None):
        write_image(args.probability_out, prediction.probability.astype(np.float32, copy=False), overwrite=args.overwrite)
        print(f"wrote object probabilities to {args.probability_out}")
    if getattr(args, "features_out", None):
        table = model.features(prediction)
        if table is None:
            raise InputError(f"{model.method} has no object features to write; drop --features-out")
        write_csv(args.features_out, table)
        print(f"wrote {len(table['label'])} objects' features to {args.features_out}")


def _check_output(key: str, path, overwrite: bool) -> None:
    """Fail at once on an output name that cannot be written: images by their extension, the object table as .csv."""
    from probseg.io.images import check_output_path

    if key != "features_out":
        check_output_path(path, overwrite)
    elif Path(path).suffix.lower() != ".csv" or Path(path).is_dir():
        raise InputError(f"cannot write {path}: the object table is written as a .csv file")


def write_csv(path, table: dict) -> None:
    """Write columns of equal length to ``path`` as CSV (atomically: a failed write leaves no half file)."""
    import csv
    import io

    from probseg.io.atomic import write_bytes

    names = list(table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    columns = [np.asarray(table[n]) for n in names]
    for row in zip(*columns):
        writer.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else int(v) for v in row])
    write_bytes(path, buffer.getvalue().encode())


def _irreplaceable(flag: str, path: Path) -> str | None:
    """Why an existing output must stay even with --overwrite, or None.

    Files may be replaced; of folders, only a zarr array (an image output) or,
    for ``--raw-out``, a raw store that probseg wrote.
    """
    if flag != "--raw-out":
        from probseg.io.images import is_zarr_array

        return "is a folder" if path.is_dir() and not is_zarr_array(path) else None
    from probseg.io.rawstore import store_method

    return None if store_method(path) is not None else "is not a raw store written by probseg"


def _guard_outputs(args, inputs: dict, outputs: dict, sidecar: bool = True) -> None:
    """Refuse outputs that are inputs, repeat each other, or exist without --overwrite (see probseg.io.outputs).

    ``sidecar``: whether ``--out`` comes with its JSON description, which is checked like an output.
    """
    from probseg.io.outputs import check_outputs
    from probseg.core.record import labels_sidecar

    named = {f"--{key.replace('_', '-')}": value for key, value in outputs.items()}
    if sidecar and outputs.get("out") is not None:
        named["the description of --out"] = labels_sidecar(outputs["out"])
    check_outputs(inputs, named, overwrite=args.overwrite, replaceable=_irreplaceable)


def _cmd_segment(args) -> int:
    from probseg.engine.api import load_model
    from probseg.core.callbacks import Callbacks
    from probseg.core.device import describe_device

    outputs = {"out": args.out, "samples_out": args.samples_out, "embeddings_out": args.embeddings_out,
               "uncertainty_out": args.uncertainty_out, "probability_out": args.probability_out,
               "features_out": args.features_out}
    inputs = {"MODEL_DIR": args.model, "IMAGE": args.image}
    if args.foreground_mask is not None:
        inputs["--foreground-mask"] = args.foreground_mask
    _guard_outputs(args, inputs, {**outputs, "raw_out": args.raw_out})
    for key, value in outputs.items():
        if value is not None:
            _check_output(key, value, args.overwrite)
    stitch = args.stitch == "consensus"
    if stitch and args.window_overlap is not None and args.window_overlap >= args.window:
        raise InputError(f"--window-overlap must be less than the window ({args.window} px), got {args.window_overlap}")
    if stitch:
        extra = [f"--{k.replace('_', '-')}" for k in ("samples_out", "embeddings_out", "uncertainty_out", "probability_out", "features_out") if outputs[k]]
        if args.raw_out:
            extra.append("--raw-out")
        if extra:
            raise InputError(f"--stitch consensus writes the labels only; drop {', '.join(extra)}")
        if args.foreground_mask is not None:
            raise InputError("--stitch consensus does not take a --foreground-mask yet; drop one of them")
        _check_consensus_options(args)
    settings = _settings_of(args)
    image, shape = _read_with_shape(args.image, args.channel_axis, args.rgb)
    foreground = _read_foreground(args.foreground_mask, shape) if args.foreground_mask is not None else None
    model = load_model(args.model, device=args.device)
    model.settings = model.make_settings(settings)  # a bad value fails before the network runs
    if args.embeddings_out and "embeddings" not in model.raw_maps:
        raise InputError(f"{model.method} has no embeddings to write; drop --embeddings-out")
    if args.features_out and not model.has_features:
        raise InputError(f"{model.method} has no object features to write; drop --features-out")
    if args.tile_size is not None:
        model.tile_size = args.tile_size
    if stitch:
        return _segment_stitched(args, model, image)
    reporter = _Reporter("segmenting", "tile")
    reporter.message(f"segmenting with a {model.method} model on {describe_device(model.device)}")
    callbacks = Callbacks(on_progress=reporter.progress, on_message=reporter.message)
    start = time.perf_counter()
    # The labels are draw 0's segmentation; the other draws only feed the
    # sample outputs, so without those one draw is the whole (and 9x cheaper) job.
    wants_samples = any((args.samples_out, args.uncertainty_out, args.probability_out, args.raw_out))
    n_samples = args.samples if wants_samples or not model.draws_independent(model.settings) else 1
    writer = None
    if args.raw_out:
        from probseg.io.rawstore import RawWriter

        if args.overwrite and Path(args.raw_out).exists():
            import shutil

            shutil.rmtree(args.raw_out)  # a probseg raw store, checked by _guard_outputs
        writer = RawWriter(args.raw_out, model.meta(), n_samples)
    # Each draw is post-processed (and stored, with --raw-out) as it comes, so
    # only one draw's raw maps are in memory where the method allows it.
    try:
        prediction = model.predict(image, n_samples, seed=args.seed, channel_axis=args.channel_axis, rgb=args.rgb,
                                   callbacks=callbacks, keep_raw=False, on_draw=writer.add if writer else None,
                                   foreground=foreground)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        reporter.close()
    if writer is not None:
        writer.close(prediction.raw)
        print(f"wrote the raw output to {args.raw_out}")
    source = {"model": str(Path(args.model).resolve()), "method": model.method,
              "weights_sha256": model.record.get("weights_sha256"), "image": str(Path(args.image).resolve()),
              "seed": args.seed}
    if args.foreground_mask is not None:
        source["foreground"] = str(Path(args.foreground_mask).resolve())
    _write_results(args, prediction, time.perf_counter() - start, source, model)
    return 0


def _cmd_instances(args) -> int:
    from probseg import methods
    from probseg.io.rawstore import load_raw

    outputs = {"out": args.out, "samples_out": args.samples_out, "uncertainty_out": args.uncertainty_out,
               "probability_out": args.probability_out, "features_out": args.features_out}
    inputs = {"RAW.zarr": args.raw}
    if args.foreground_mask is not None:
        inputs["--foreground-mask"] = args.foreground_mask
    _guard_outputs(args, inputs, outputs)
    for key, value in outputs.items():
        if value is not None:
            _check_output(key, value, args.overwrite)
    start = time.perf_counter()
    raw, meta = load_raw(args.raw)
    if args.foreground_mask is not None:
        from probseg.partition.foreground import attach_foreground

        raw = attach_foreground(raw, _read_foreground(args.foreground_mask, raw.shape))
    info = methods.get(meta["method"])
    model = info.model_class.for_postprocessing(meta, _settings_of(args))
    if args.features_out and not model.has_features:
        raise InputError(f"{model.method} has no object features to write; drop --features-out")
    prediction = model.postprocess(raw)
    source = {"raw": str(Path(args.raw).resolve()), "method": info.name, "model": raw.attrs.get("model"),
              "weights_sha256": raw.attrs.get("weights_sha256"), "seed": raw.attrs.get("seed")}
    if args.foreground_mask is not None:
        source["foreground"] = str(Path(args.foreground_mask).resolve())
    _write_results(args, prediction, time.perf_counter() - start, source, model)
    return 0


def _cmd_tune(args) -> int:
    from probseg.engine.api import load_model
    from probseg.core.callbacks import Callbacks
    from probseg.io.images import read_image
    from probseg.engine.tuning import tune

    image = _read_checked(args.image, args.channel_axis, args.rgb)
    labels = read_image(args.labels)
    model = load_model(args.model, device=args.device)
    reporter = _Reporter("tuning", "setting")
    try:
        result = tune(model, image, labels, save=not args.dry_run, seed=args.seed, channel_axis=args.channel_axis, rgb=args.rgb,
                      callbacks=Callbacks(on_progress=reporter.progress, on_message=reporter.message))
    finally:
        reporter.close()
    names = [k for k in result.table[0] if k not in ("f1", "ap_dsb")]
    best = result.best_row
    header = names + ["f1", "ap_dsb"]
    rows = [[_number(row[n]) for n in names] + [f"{row['f1']:.3f}", f"{row['ap_dsb']:.3f}"] for row in result.table]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row, cells in zip(result.table, rows):
        mark = "  <- best" if row is best else ""
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + mark)
    chosen = ", ".join(f"{n}={_number(best[n])}" for n in names)
    if result.saved:
        print(f"stored {chosen} in {result.saved}; the next prediction with this model uses them")
    else:
        print(f"best: {chosen} (dry run: nothing stored)")
    return 0


def _check_consensus_options(args) -> None:
    # The other options were checked while parsing; the resolution's range
    # depends on --objective.
    if args.resolution != "auto":
        bounds.resolution_bound(args.objective).check(f"--resolution with --objective {args.objective}", args.resolution)


def _check_region(rect, shape) -> None:
    """Refuse a --region that is reversed, empty or beyond the image, rather than quietly fixing it."""
    y0, x0, y1, x1 = rect
    given = ",".join(map(str, rect))
    if y1 <= y0 or x1 <= x0:
        raise InputError(f"--region {given} is empty or reversed: give y0,x0,y1,x1 with y0 < y1 and x0 < x1")
    height, width = shape
    if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
        clipped = f"{max(y0, 0)},{max(x0, 0)},{min(y1, height)},{min(x1, width)}"
        raise InputError(f"--region {given} reaches beyond the {height}x{width} image; "
                         f"rows 0..{height} and columns 0..{width} exist (e.g. --region {clipped})")


def _consensus_options(args) -> dict:
    return dict(radius=args.radius, min_weight=args.min_weight, min_foreground=args.min_foreground, backend=args.backend)


def _print_sweep(sweep) -> None:
    # The count is of what is then written (split communities, after --min-size).
    where = " in the region" if sweep.windows else ""
    print(f"auto resolution ({sweep.objective}): {sweep.best:.4g}, mean NMI {sweep.nmi[sweep.best_index]:.4f}, "
          f"{int(sweep.n_objects[sweep.best_index])} objects{where}")


def _segment_stitched(args, model, image) -> int:
    from probseg.core.callbacks import Callbacks
    from probseg.consensus import segment_stitched
    from probseg.core.device import describe_device
    from probseg.io.images import write_image

    reporter = _Reporter("segmenting windows", "window")
    reporter.message(f"segmenting windows with a {model.method} model on {describe_device(model.device)}")
    callbacks = Callbacks(on_progress=reporter.progress, on_message=reporter.message)
    start = time.perf_counter()
    try:
        result = segment_stitched(
            model, image, window=args.window, overlap=args.window_overlap, n_samples=args.samples, resolution=args.resolution,
            objective=args.objective, seed=args.seed, min_size=args.min_size, channel_axis=args.channel_axis, rgb=args.rgb,
            callbacks=callbacks, device=args.device, **_consensus_options(args),
        )
    finally:
        reporter.close()
    if result.sweep is not None:
        _print_sweep(result.sweep)
    labels = result.labels
    write_image(args.out, labels.astype(_label_dtype(labels)), overwrite=args.overwrite)
    n_objects = int(np.count_nonzero(np.unique(labels)))
    print(f"wrote {n_objects} objects from {result.n_windows} windows to {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_consensus(args) -> int:
    from probseg.consensus import Consensus
    from probseg.consensus.fragments import check_labelings
    from probseg.io.images import check_output_path, read_image, write_image

    if args.sweep_out is not None:
        sweep_path = Path(args.sweep_out)
        if sweep_path.is_dir() or not sweep_path.parent.is_dir():
            raise InputError(f"cannot write the sweep to {args.sweep_out}: it is a folder or its folder does not exist")
    _check_consensus_options(args)
    if args.into and not args.region:
        raise InputError("--into needs --region (outside the region its labels are kept)")
    if args.sweep_out and args.resolution != "auto":
        raise InputError("--sweep-out needs --resolution auto")
    _guard_outputs(args, {"SAMPLES": args.samples, "--into": args.into}, {"out": args.out, "sweep_out": args.sweep_out},
                   sidecar=False)
    check_output_path(args.out, args.overwrite)
    samples = check_labelings(read_image(args.samples), args.samples)
    if args.region:
        _check_region(args.region, samples.shape[1:])
    into = None
    if args.into:
        into = read_image(args.into)
        if into.shape != samples.shape[1:]:
            raise InputError(f"{args.into} has shape {into.shape} but the samples are {samples.shape[1:]}")
        into = check_labelings(into, args.into)[0]
    start = time.perf_counter()
    consensus = Consensus.from_samples(samples, device=args.device, **_consensus_options(args))
    print(f"{samples.shape[0]} samples of {samples.shape[1]}x{samples.shape[2]}: {consensus.fragments.count} fragments, "
          f"{len(consensus.graph.edges)} links ({time.perf_counter() - start:.1f} s)")
    region = consensus.region(args.region) if args.region else None
    resolution = args.resolution
    if resolution == "auto":
        sweep = consensus.sweep(objective=args.objective, seed=args.seed, region=region, min_size=args.min_size)
        _print_sweep(sweep)
        resolution = sweep.best
        if args.sweep_out:
            table = np.column_stack([sweep.resolutions, sweep.nmi, sweep.n_objects])
            Path(args.sweep_out).write_text(
                "resolution,mean_nmi,objects\n" + "".join(f"{r:.6g},{n:.6f},{int(k)}\n" for r, n, k in table)
            )
            print(f"wrote the sweep to {args.sweep_out}")
    if region is None:
        labels = consensus.labels(resolution, args.objective, args.seed, args.min_size)
    else:
        labels = consensus.update_region(into, region, resolution, args.objective, args.seed, args.min_size)
    write_image(args.out, labels.astype(_label_dtype(labels)), overwrite=args.overwrite)
    where = "" if region is None else f" (region {','.join(map(str, region.rect))})"
    n_objects = int(np.count_nonzero(np.unique(labels)))
    print(f"wrote {n_objects} objects to {args.out}{where} ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_evaluate(args) -> int:
    from probseg.io.images import read_image
    from probseg.evaluation.metrics import evaluate

    pred = read_image(args.pred)
    gt = read_image(args.gt)
    if pred.shape != gt.shape:
        raise InputError(f"{args.pred} has shape {pred.shape} but {args.gt} has shape {gt.shape}; they must be equal")
    print(json.dumps(evaluate(pred, gt)))
    return 0


def _describe_settings(method: str, config: dict) -> tuple[list[str], list[str]]:
    """``name=value unit`` strings: main settings, and advanced ones that differ from the default."""
    from probseg import methods
    from probseg.core.config import fields_of

    try:
        specs = {s.name: s for s in fields_of(methods.get(method).config_class)}
    except InputError:
        specs = {}
    # Declaration order (the form's order) beats config.json's sorted keys.
    names = [n for n in specs if n in config] + sorted(n for n in config if n not in specs)
    main, changed = [], []
    for name in names:
        value, spec = config[name], specs.get(name)
        text = f"{name}={_number(value)}" + (f" {spec.unit}" if spec is not None and spec.unit else "")
        if spec is None or not spec.advanced:
            main.append(text)
        elif value != spec.default:
            changed.append(text)
    return main, changed


def _describe_post_settings(folder) -> list[tuple[str, str]]:
    """The post-processing line of ``probseg info``: tuned settings if the folder has them."""
    import json as _json

    from probseg.engine.model import SETTINGS_NAME

    path = Path(folder) / SETTINGS_NAME
    if not path.is_file():
        return [("post-processing", "the method's defaults (run 'probseg tune' to fit them to labelled data)")]
    try:
        values = _json.loads(path.read_text())["settings"]
        return [("post-processing", ", ".join(f"{k}={_number(v)}" for k, v in values.items()) + f" ({SETTINGS_NAME})")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [("post-processing", f"{SETTINGS_NAME} is unreadable")]


def _per_channel(values) -> str:
    """``12.5`` for one channel, ``[12.5, 3.1]`` for several."""
    if isinstance(values, list) and len(values) == 1:
        values = values[0]
    return _number(values) if isinstance(values, (int, float)) else str(values)


def _cmd_info(args) -> int:
    from probseg import methods
    from probseg.io.checkpoint import WEIGHTS_NAME, read_config

    meta = read_config(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    method = meta["method"]
    try:
        title = methods.get(method).title
    except InputError:
        title = "not known to this probseg"
    config = meta["config"] if isinstance(meta["config"], dict) else {}
    main, changed = _describe_settings(method, config)
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    lines = [
        ("model", str(args.model)),
        ("method", f"{method} ({title})"),
        ("format", f"{meta['format']} version {meta['format_version']}"),
    ]
    if training:
        text = (
            f"{training.get('steps_done', '?')} of {training.get('steps_total', '?')} steps in "
            f"{_number(training.get('seconds', '?'))} s on {training.get('device', '?')}"
        )
        if "seed" in training:
            text += f", seed {training['seed']}"
        if training.get("cancelled"):
            text += ", cancelled before the end"
        lines.append(("training", text))
        losses = training.get("losses") or []
        if losses:
            lines.append(("final loss", f"{losses[-1]:.4g}"))
    else:
        lines.append(("training", "no record"))
    lines.append(("settings", ", ".join(main) or "none"))
    if changed:
        lines.append(("advanced", ", ".join(changed)))
    lines += _describe_post_settings(args.model)
    record = meta.get("record") if isinstance(meta.get("record"), dict) else {}
    if record:
        data = record.get("training_data") or {}
        shapes = ", ".join("x".join(map(str, s)) for s in data.get("shapes", []))
        lines.append(("trained on", f"{shapes or '?'} (sha256 {str(data.get('sha256', '?'))[:12]})"
                      + (f", labels sha256 {data['labels_sha256'][:12]}" if data.get("labels_sha256") else "")))
        versions = record.get("versions") or {}
        lines.append(("made with", ", ".join(f"{k} {v}" for k, v in versions.items()) + f" on {record.get('device', '?')}"
                      + (f", seed {record['seed']}" if "seed" in record else "")))
        if record.get("weights_sha256"):
            lines.append(("weights sha256", record["weights_sha256"]))
    lines.append(("input channels", str(meta.get("in_channels", "?"))))
    norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    if norm:
        lo, hi = (list(norm.get("percentiles", [])) + ["?", "?"])[:2]
        text = f"{norm.get('mode', 'per-image')} percentiles {_number(lo)} to {_number(hi)}"
        if "train_low" in norm and "train_high" in norm:
            text += f"; training images span {_per_channel(norm['train_low'])} to {_per_channel(norm['train_high'])}"
        lines.append(("normalisation", text))
    weights = Path(args.model) / WEIGHTS_NAME
    lines.append(("weights", f"{weights.name}, {weights.stat().st_size / 1024:.1f} KiB" if weights.is_file() else f"{weights.name} MISSING"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0


def _cmd_methods(args) -> int:
    from probseg import methods

    names = methods.available()
    width = max(len(n) for n in names)
    for name in names:
        info = methods.get(name)
        print(f"{name:<{width}}  {info.title}: {info.summary}")
    return 0


# -- entry point --------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(text: str) -> None:
    print(f"{PROG}: error: {_one_line(text)}", file=sys.stderr)


def _os_message(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def main(argv=None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_command_of(argv), argv)
        args, extra = parser.parse_known_args(argv)
        if getattr(args, "handler", None) is None:
            raise _UsageError("choose a command: train, segment, instances, tune, consensus, evaluate, info or methods (see 'probseg --help')")
        if extra:
            raise _unrecognized(args, extra)
        return args.handler(args)
    except SystemExit as exc:  # --help and --version end through here
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except Cancelled as exc:
        _fail(str(exc))
        return EXIT_INTERRUPTED
    except ProbsegError as exc:
        _fail(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing more was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        _fail("out of memory; try a smaller image, a smaller --tile-size or fewer --samples")
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of stdout went away (e.g. '| head'); nothing to report.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILURE
    except OSError as exc:
        _fail(_os_message(exc))
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the promise is: no traceback, ever
        if os.environ.get("PROBSEG_DEBUG"):
            raise
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            _fail("the GPU ran out of memory; try a smaller --tile-size, a smaller --batch-size or --device cpu")
            return EXIT_FAILURE
        _fail(f"internal error ({type(exc).__name__}: {exc}); please report it; set PROBSEG_DEBUG=1 for the traceback")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
