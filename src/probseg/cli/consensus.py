"""``probseg consensus``: one segmentation from several; and the consensus options ``segment --stitch consensus`` shares."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from probseg.cli.options import DEVICE_HELP, add_overwrite, bounded
from probseg.cli.output import guard_outputs, label_dtype
from probseg.core import bounds
from probseg.core.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "consensus",
        help="one segmentation from several (samples)",
        description="Fuse several segmentations of one image into a consensus: a graph links nearby "
        "pixels by how often the samples put them in one object, and Leiden splits it into objects.",
    )
    parser.add_argument("samples", metavar="SAMPLES", help="(n, Y, X) integer label images, e.g. from 'probseg segment --samples-out'")
    parser.add_argument("--out", required=True, metavar="LABELS", help="consensus label image to write (.tif, .npy, .png or .zarr)")
    add_overwrite(parser)
    parser.add_argument("--region", type=_rect, metavar="Y0,X0,Y1,X1", help="only re-segment this rectangle (rows y0..y1-1, columns x0..x1-1)")
    parser.add_argument("--into", metavar="LABELS", help="with --region: labels to copy outside the rectangle (default: background)")
    parser.add_argument("--sweep-out", metavar="CSV", help="write the resolution sweep (resolution, mean NMI, objects) of --resolution auto")
    parser.add_argument("--seed", type=bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of Leiden, {bounds.SEED.describe()} (default: 0)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    add_consensus_options(parser, "consensus settings")
    parser.set_defaults(handler=run, _prog=parser.prog)


def _resolution(text: str):
    """An argparse type: a positive resolution or "auto" (its range depends on --objective, checked later)."""
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
    """An argparse type: ``y0,x0,y1,x1`` as a tuple of four integers."""
    parts = text.replace(" ", "").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected four integers y0,x0,y1,x1, got {text!r}")
    return tuple(values)


def add_consensus_options(parser: argparse.ArgumentParser, title: str, min_size_flag: str = "--min-size") -> None:
    """The options of the consensus graph and its Leiden partition, in a group titled ``title``."""
    group = parser.add_argument_group(title)
    group.add_argument("--resolution", type=_resolution, default="auto", metavar="R|auto",
                       help=f"Leiden resolution; higher splits more; cpm: {bounds.RESOLUTION_CPM.describe()}, rb: {bounds.RESOLUTION_RB.describe()}; 'auto' picks the one whose consensus agrees best (mean NMI) with the labelings (default: auto)")
    group.add_argument("--objective", choices=("cpm", "rb"), default="cpm",
                       help="cpm: constant Potts model, a resolution means the same on any image size; rb: modularity with resolution (default: cpm)")
    group.add_argument(min_size_flag, dest="min_size", type=bounded(bounds.MIN_SIZE), default=0, metavar="PX", help=f"objects with fewer pixels become background, {bounds.MIN_SIZE.describe()} (default: 0)")
    group.add_argument("--radius", type=bounded(bounds.RADIUS), default=4, metavar="PX", help=f"pixels at most this far apart are linked in the graph, {bounds.RADIUS.describe()} (default: 4)")
    group.add_argument("--min-weight", type=bounded(bounds.MIN_WEIGHT), default=0.01, metavar="W", help=f"links weaker than this fraction are dropped, {bounds.MIN_WEIGHT.describe()} (default: 0.01)")
    group.add_argument("--min-foreground", type=bounded(bounds.MIN_FOREGROUND), default=0.5, metavar="F",
                       help=f"fraction of the labelings that must call a pixel foreground, {bounds.MIN_FOREGROUND.describe()} (default: 0.5)")
    group.add_argument("--backend", choices=("igraph", "leidenalg"), default="igraph",
                       help="Leiden implementation: igraph's (fast) or leidenalg (reference) (default: igraph)")


def check_consensus_options(args) -> None:
    """Refuse a --resolution outside the range of its --objective."""
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


def consensus_options(args) -> dict:
    """The graph options, as keywords of ``Consensus.from_samples`` and ``segment_stitched``."""
    return dict(radius=args.radius, min_weight=args.min_weight, min_foreground=args.min_foreground, backend=args.backend)


def print_sweep(sweep) -> None:
    """The line that reports the resolution --resolution auto chose."""
    # The count is of what is then written (split communities, after --min-size).
    where = " in the region" if sweep.windows else ""
    print(f"auto resolution ({sweep.objective}): {sweep.best:.4g}, mean NMI {sweep.nmi[sweep.best_index]:.4f}, "
          f"{int(sweep.n_objects[sweep.best_index])} objects{where}")


def run(args) -> int:
    """Fuse the samples into one label image; with --resolution auto, print (and maybe write) the sweep.

    The locks of --out and --sweep-out are held while it runs.
    """
    from probseg.io.images import check_output_path
    from probseg.io.lock import hold_all

    if args.sweep_out is not None:
        sweep_path = Path(args.sweep_out)
        if sweep_path.is_dir() or not sweep_path.parent.is_dir():
            raise InputError(f"cannot write the sweep to {args.sweep_out}: it is a folder or its folder does not exist")
    check_consensus_options(args)
    if args.into and not args.region:
        raise InputError("--into needs --region (outside the region its labels are kept)")
    if args.sweep_out and args.resolution != "auto":
        raise InputError("--sweep-out needs --resolution auto")
    guard_outputs(args, {"SAMPLES": args.samples, "--into": args.into}, {"out": args.out, "sweep_out": args.sweep_out},
                   sidecar=False)
    check_output_path(args.out, args.overwrite)
    with hold_all({"--out": args.out, "--sweep-out": args.sweep_out}):
        # Again, now that no other run can write them.
        guard_outputs(args, {"SAMPLES": args.samples, "--into": args.into}, {"out": args.out, "sweep_out": args.sweep_out},
                      sidecar=False)
        return _fuse(args)


def _fuse(args) -> int:
    from probseg.consensus import Consensus
    from probseg.consensus.fragments import check_labelings
    from probseg.io.atomic import replace_on_success, write_bytes
    from probseg.io.images import read_image, write_image

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
    consensus = Consensus.from_samples(samples, device=args.device, **consensus_options(args))
    print(f"{samples.shape[0]} samples of {samples.shape[1]}x{samples.shape[2]}: {consensus.fragments.count} fragments, "
          f"{len(consensus.graph.edges)} links ({time.perf_counter() - start:.1f} s)")
    region = consensus.region(args.region) if args.region else None
    resolution = args.resolution
    sweep_text = None
    if resolution == "auto":
        sweep = consensus.sweep(objective=args.objective, seed=args.seed, region=region, min_size=args.min_size)
        print_sweep(sweep)
        resolution = sweep.best
        if args.sweep_out:
            table = np.column_stack([sweep.resolutions, sweep.nmi, sweep.n_objects])
            sweep_text = "resolution,mean_nmi,objects\n" + "".join(f"{r:.6g},{n:.6f},{int(k)}\n" for r, n, k in table)
    if region is None:
        labels = consensus.labels(resolution, args.objective, args.seed, args.min_size)
    else:
        labels = consensus.update_region(into, region, resolution, args.objective, args.seed, args.min_size)
    # The sweep and the labels replace their old versions together, once both are written.
    with replace_on_success():
        if sweep_text is not None:
            write_bytes(args.sweep_out, sweep_text.encode())
        write_image(args.out, labels.astype(label_dtype(labels)), overwrite=args.overwrite)
    if sweep_text is not None:
        print(f"wrote the sweep to {args.sweep_out}")
    where = "" if region is None else f" (region {','.join(map(str, region.rect))})"
    n_objects = int(np.count_nonzero(np.unique(labels)))
    print(f"wrote {n_objects} objects to {args.out}{where} ({time.perf_counter() - start:.1f} s)")
    return 0
