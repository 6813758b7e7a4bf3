"""What ``segment`` and ``instances`` write: labels with their JSON description, samples, embeddings,
uncertainty, probabilities and the object table, and the checks that refuse unusable outputs before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import probseg
from probseg.core.errors import InputError


def label_dtype(labels: np.ndarray):
    """The dtype labels are written in: uint16 where it holds them, else uint32."""
    # uint16 is what most viewers and Fiji open; more objects need uint32.
    return np.uint16 if labels.size == 0 or labels.max() < 65536 else np.uint32


def write_results(args, prediction, seconds: float, source: dict, model=None, raw_writer=None) -> None:
    """Write the labels (with their JSON sidecar) and whichever of samples, embeddings, uncertainty,
    probability and object features were asked for; print a line for each once all are in place.

    The files are written beside their targets and moved into place
    together at the end (:func:`probseg.io.atomic.replace_on_success`), so
    a failure on the way leaves every old output as it was.

    ``source`` says where the labels come from; the sidecar adds the
    ``--foreground-mask`` and the settings. ``raw_writer``, a
    :class:`probseg.io.rawstore.RawWriter` that holds the draws, is closed
    first and its store moved into place with the rest (``--raw-out``).
    """
    from probseg.io.atomic import replace_on_success

    done: list[str] = []
    with replace_on_success():
        if raw_writer is not None:
            try:
                raw_writer.close(prediction.raw)
            except BaseException:
                raw_writer.abort()
                raise
            done.append(f"wrote the raw output to {raw_writer.path}")
        _write_all(args, prediction, seconds, source, model, done)
    for line in done:
        print(line)


def _write_all(args, prediction, seconds: float, source: dict, model, done: list) -> None:
    from probseg.io.atomic import write_json
    from probseg.core.config import config_to_dict
    from probseg.io.images import write_image
    from probseg.core.record import labels_sidecar

    segmentation = prediction.segmentation
    n_objects = int(np.count_nonzero(np.unique(segmentation)))
    write_image(args.out, segmentation.astype(label_dtype(segmentation)), overwrite=args.overwrite)
    if args.foreground_mask is not None:
        source = {**source, "foreground": str(Path(args.foreground_mask).resolve())}
    write_json(labels_sidecar(args.out), {
        **source, "settings": config_to_dict(prediction.settings), "n_samples": int(prediction.samples.shape[0]),
        "objects": n_objects, "probseg": probseg.__version__,
    })
    done.append(f"wrote {n_objects} objects to {args.out} ({seconds:.1f} s)")
    if getattr(args, "samples_out", None):
        samples = prediction.samples
        write_image(args.samples_out, samples.astype(label_dtype(samples)), overwrite=args.overwrite)
        done.append(f"wrote {samples.shape[0]} samples to {args.samples_out}")
    if getattr(args, "embeddings_out", None):
        # The property stacks a fresh copy on every access; take it once.
        embeddings = prediction.embeddings
        if embeddings is None:
            raise InputError("this method has no embeddings to write; drop --embeddings-out")
        write_image(args.embeddings_out, embeddings.astype(np.float32, copy=False), overwrite=args.overwrite)
        done.append(f"wrote embeddings {embeddings.shape} to {args.embeddings_out}")
        del embeddings
    if getattr(args, "uncertainty_out", None):
        write_image(args.uncertainty_out, prediction.uncertainty.astype(np.float32, copy=False), overwrite=args.overwrite)
        done.append(f"wrote uncertainty to {args.uncertainty_out}")
    if getattr(args, "probability_out", None):
        write_image(args.probability_out, prediction.probability.astype(np.float32, copy=False), overwrite=args.overwrite)
        done.append(f"wrote object probabilities to {args.probability_out}")
    if getattr(args, "features_out", None):
        table = model.features(prediction)
        if table is None:
            raise InputError(f"{model.method} has no object features to write; drop --features-out")
        write_csv(args.features_out, table)
        done.append(f"wrote {len(table['label'])} objects' features to {args.features_out}")


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


def guard_outputs(args, inputs: dict, outputs: dict, sidecar: bool = True) -> None:
    """Refuse outputs that are inputs, repeat each other, or exist without --overwrite (see probseg.io.outputs).

    ``sidecar``: whether ``--out`` comes with its JSON description, which is checked like an output.
    """
    from probseg.io.outputs import check_outputs
    from probseg.core.record import labels_sidecar

    named = {f"--{key.replace('_', '-')}": value for key, value in outputs.items()}
    if sidecar and outputs.get("out") is not None:
        named["the description of --out"] = labels_sidecar(outputs["out"])
    check_outputs(inputs, named, overwrite=args.overwrite, replaceable=_irreplaceable)


def check_sample_outputs(args, inputs: dict, outputs: dict, more: dict | None = None) -> None:
    """Refuse the unusable outputs of ``segment`` or ``instances`` before any work.

    ``inputs`` are the command's inputs other than ``--foreground-mask``,
    ``outputs`` the images and the object table (by argparse dest), whose
    names are checked too, and ``more`` other outputs (``--raw-out``).
    """
    if args.foreground_mask is not None:
        inputs = {**inputs, "--foreground-mask": args.foreground_mask}
    guard_outputs(args, inputs, {**outputs, **(more or {})})
    for key, value in outputs.items():
        if value is not None:
            _check_output(key, value, args.overwrite)
    for key, value in {**outputs, **(more or {})}.items():
        if value is not None:
            check_writable(f"--{key.replace('_', '-')}", value)


def check_writable(flag: str, path) -> None:
    """Refuse an output whose folder cannot be written (or made), before any work.

    The output is written beside its name and moved into place, so the
    folder that will hold it, or the nearest folder above it that exists,
    must be a folder this user may write in.
    """
    import os

    place = Path(path).parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise InputError(f"cannot write {flag} {path}: {place} is a file, not a folder")
    if not os.access(place, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {flag} {path}: the folder {place} is not writable")
