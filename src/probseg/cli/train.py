"""``probseg train METHOD``: one sub-parser per registered method, its Config fields as flags."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from probseg.cli.errors import EXIT_INTERRUPTED, PROG, Parser
from probseg.cli.flags import add_fields
from probseg.cli.inputs import read_checked
from probseg.cli.options import DEVICE_HELP, bounded
from probseg.cli.progress import Reporter, StopOnSigint
from probseg.cli.source import flag_values, usage
from probseg.core import bounds
from probseg.core.config import fields_of
from probseg.core.errors import InputError
from probseg.engine import registry


def add_parser(sub, with_methods: bool) -> None:
    """The ``train`` parser; ``with_methods`` adds a sub-parser per method (which imports the methods, and torch)."""
    train = sub.add_parser(
        "train",
        help="train a model on images",
        description="Train a model on the images to segment and save it to a folder. "
        "Ctrl-C stops training after the current step and saves the model so far.",
    )
    train.set_defaults(_prog=train.prog)
    if with_methods:
        methods_sub = train.add_subparsers(dest="method", metavar="METHOD", required=True, parser_class=Parser)
        common = _common_options()
        for name in registry.available():
            _add_method_parser(methods_sub, registry.get(name), common)


def _common_options() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("images", nargs="+", metavar="IMAGE", help="images to learn from (tif, png, jpg, npy or zarr)")
    common.add_argument("--out", required=True, metavar="DIR", help="model folder to write (created if missing)")
    common.add_argument("--overwrite", action="store_true", help="replace the model in --out if there is one")
    common.add_argument("--labels", nargs="+", metavar="LABELS", help="instance labels, one per image, for methods that use them")
    common.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    common.add_argument("--seed", type=bounded(bounds.SEED), default=0, metavar="S", help=f"random seed, {bounds.SEED.describe()}; same seed and device give the same model (default: 0)")
    common.add_argument(
        "--checkpoint-every", type=bounded(bounds.CHECKPOINT_EVERY), default=0, metavar="N", help="also save the model every N steps (0: only at the end)"
    )
    common.add_argument("--rgb", action="store_true", help="the last axis of each image holds RGB(A) colour channels")
    common.add_argument("--channel-axis", type=int, metavar="A", help="axis of each image that holds channels")
    return common


def _takes_reviewed(config_class) -> bool:
    """Whether the method's Config has a ``label_mode``, which ``--reviewed`` sets to the "reviewed" encoding of probseg.core.labels."""
    return any(spec.name == "label_mode" for spec in fields_of(config_class))


def _add_method_parser(methods_sub, info, common) -> None:
    parser = methods_sub.add_parser(
        info.name,
        parents=[common],
        help=info.summary,
        description=f"Train {info.title}: {info.summary}. Reference: {info.reference}.",
    )
    if _takes_reviewed(info.config_class):
        parser.add_argument("--reviewed", nargs="+", metavar="MASK",
                            help="the reviewed masks the proofreading export writes beside the labels (*_reviewed), one per "
                                 "labels file; 0 labels inside a mask are known background (sets --label-mode reviewed)")
    flags = [a for action in parser._actions for a in action.option_strings]
    flags += add_fields(parser, info.config_class, f"{info.title} settings", "cfg_")
    # The method travels to the command, which need not look it up again.
    parser.set_defaults(handler=run, _prog=parser.prog, _flags=flags, _info=info)


def _reviewed(args) -> list:
    """The ``--reviewed`` masks, for methods with that flag; [] otherwise."""
    return getattr(args, "reviewed", None) or []


def _job(args, info):
    """The checked training job: the method's Config from the flags; --reviewed sets --label-mode reviewed."""
    from probseg.engine import api

    # Every refusal here is about the command line alone (a value, a flag missing or out of place): exit status 2.
    values = flag_values(args, info.config_class, "cfg_")
    if _reviewed(args):
        if values.get("label_mode", "reviewed") != "reviewed":
            raise usage(args, f"--reviewed marks known background, which --label-mode {values['label_mode']} would ignore; "
                              "drop --label-mode or use reviewed")
        values["label_mode"] = "reviewed"
    try:
        return api.prepare_training(info, values, device=args.device, seed=args.seed, channel_axis=args.channel_axis,
                                    rgb=args.rgb, labelled=bool(args.labels))
    except InputError as exc:
        raise usage(args, exc) from None


def _check_model_folder(args) -> Path:
    """The model folder of ``train --out``, refused if it would replace inputs or, without --overwrite, a model."""
    from probseg.engine import api
    from probseg.engine.persistence import SETTINGS_NAME
    from probseg.io.checkpoint import CONFIG_NAME, WEIGHTS_NAME
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
    api.check_model_files(folder, f"--out {folder}: ")
    if (folder / CONFIG_NAME).exists() and not args.overwrite:
        raise InputError(f"--out {folder} holds a model already; add --overwrite to replace it, or choose another folder")
    return folder


def _read_training_data(args, config) -> tuple[list, list | None]:
    """The images and labels (in the reviewed encoding with --reviewed), checked against each other."""
    from probseg.io.images import read_image

    images = [read_checked(p, args.channel_axis, args.rgb) for p in args.images]
    labels = [read_image(p) for p in args.labels] if args.labels else None
    if labels is not None and len(labels) != len(images):
        raise InputError(f"{len(images)} image(s) but {len(labels)} label image(s); give one labels file per image")
    if _reviewed(args):
        from probseg.core.labels import reviewed_labels

        if labels is None or len(args.reviewed) != len(labels):
            raise InputError(f"--reviewed needs one mask per labels file: {len(labels or [])} labels, {len(args.reviewed)} mask(s)")
        labels = [reviewed_labels(lab, read_image(m), config.background_id) for lab, m in zip(labels, args.reviewed)]
    return images, labels


def _prepare_model_folder(folder: Path, reporter: Reporter) -> Path:
    if (folder / "config.json").exists():
        reporter.message(f"replacing the model in {folder} (--overwrite)")
    # Creating the folder before training, but only once the inputs proved
    # usable, finds an unwritable place at once rather than after hours of
    # training, and a failed start leaves nothing behind.
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write to {folder}: permission denied")
    return folder


def run(args) -> int:
    """Train the method on the images and save the model in --out; Ctrl-C saves what is trained so far.

    The lock of --out is held for the whole run (every checkpoint), so a
    second run into the same folder is refused rather than mixed with this one.
    """
    from probseg.io.lock import hold

    # Validate settings before reading images, so a typo fails in a second.
    job = _job(args, args._info)
    if args.checkpoint_every < 0:
        raise InputError(f"--checkpoint-every must be 0 or more, got {args.checkpoint_every}")
    _check_model_folder(args)
    with hold(args.out, "--out"):
        folder = _check_model_folder(args)  # again, now that no other run can write it
        return _run(args, job, folder)


def _run(args, job, folder: Path) -> int:
    from probseg.core.device import resolve_device

    info = args._info
    images, labels = _read_training_data(args, job.config)
    resolve_device(args.device)  # an unusable --device fails before any folder is made
    reporter = Reporter("training", "step")
    created = not folder.exists()
    _prepare_model_folder(folder, reporter)
    try:
        model = _train(args, job, images, labels, folder, reporter)
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


def _train(args, job, images, labels, folder: Path, reporter: Reporter):
    """Run the training loop with a progress bar, periodic checkpoints and the first Ctrl-C as a request to stop."""
    from probseg.core.callbacks import Callbacks

    stop = StopOnSigint()
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
    with stop:
        return job.run(images, labels, callbacks, out=folder, checkpoint_every=args.checkpoint_every)
