"""``probseg instances``: labels from a raw store kept by ``segment --raw-out``, without the network."""

from __future__ import annotations

import time
from pathlib import Path

from probseg.cli.inputs import read_foreground
from probseg.cli.options import FOREGROUND_HELP, add_overwrite, add_sample_outputs
from probseg.cli.output import check_sample_outputs, write_results
from probseg.cli.source import add_settings, settings_of, source_of
from probseg.core.errors import InputError
from probseg.engine import registry

_OUTPUTS = ("out", "samples_out", "uncertainty_out", "probability_out", "features_out")


def add_parser(sub, argv: list[str] | None) -> None:
    """The ``instances`` parser; with ``argv`` (the command line), also the settings flags of the store it names."""
    instances = sub.add_parser(
        "instances",
        help="labels from a stored raw output, without the network",
        description="Turn the raw output kept by 'probseg segment --raw-out' into labels, with any post-processing "
        "settings; the network does not run and the model's weights are not needed.",
    )
    instances.add_argument("raw", metavar="RAW.zarr", help="raw store written by 'probseg segment --raw-out'")
    instances.add_argument("--out", required=True, metavar="LABELS", help="label image to write (.tif, .npy, .png, or .zarr for very large images)")
    instances.add_argument("--foreground-mask", metavar="MASK", help=FOREGROUND_HELP + "; replaces any mask stored with the raw output")
    add_sample_outputs(instances)
    add_overwrite(instances)
    instances.set_defaults(handler=run, _prog=instances.prog)
    if argv is not None:
        add_settings(instances, argv, "instances")


def run(args) -> int:
    """Post-process the raw store RAW.zarr with the settings given and write the outputs asked for, holding their locks."""
    from probseg.io.lock import hold_all

    outputs = {key: getattr(args, key) for key in _OUTPUTS}
    check_sample_outputs(args, {"RAW.zarr": args.raw}, outputs)
    with hold_all({f"--{key.replace('_', '-')}": value for key, value in outputs.items()}):
        check_sample_outputs(args, {"RAW.zarr": args.raw}, outputs)  # again, now that no other run can write them
        return _run(args)


def _run(args) -> int:
    from probseg.engine.rawread import open_raw

    start = time.perf_counter()
    source = source_of(args, args.raw)
    raw, model = open_raw(args.raw, settings_of(args), source.info if source is not None else None)
    info = registry.get(model.method)
    if args.foreground_mask is not None:
        from probseg.partition.foreground import attach_foreground

        raw = attach_foreground(raw, read_foreground(args.foreground_mask, raw.shape))
    if args.features_out and not model.has_features:
        raise InputError(f"{model.method} has no object features to write; drop --features-out")
    prediction = model.postprocess(raw)
    source = {"raw": str(Path(args.raw).resolve()), "method": info.name, "model": raw.attrs.get("model"),
              "weights_sha256": raw.attrs.get("weights_sha256"), "seed": raw.attrs.get("seed")}
    write_results(args, prediction, time.perf_counter() - start, source, model)
    return 0
