"""``probseg tune``: fit a model's post-processing settings to a labelled image and store the best."""

from __future__ import annotations

from probseg.cli.flags import number
from probseg.cli.inputs import read_checked
from probseg.cli.options import DEVICE_HELP, add_no_cost_limit, bounded
from probseg.cli.progress import Reporter
from probseg.core import bounds


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "tune",
        help="tune a model's post-processing on a labelled image",
        description="Try the method's post-processing settings on a labelled image (the network runs once), print "
        "F1 and AP_dsb for each, and store the best in the model folder so that the next prediction uses them.",
    )
    parser.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'probseg train'")
    parser.add_argument("image", metavar="IMAGE", help="an image the model did not train on, if you have one")
    parser.add_argument("labels", metavar="LABELS", help="its instance labels")
    parser.add_argument("--dry-run", action="store_true", help="only print the table; store nothing")
    parser.add_argument("--seed", type=bounded(bounds.SEED), default=0, metavar="S", help=f"random seed of the network pass, {bounds.SEED.describe()} (default: 0)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    add_no_cost_limit(parser)
    parser.add_argument("--rgb", action="store_true", help="the last axis of the image holds RGB(A) colour channels")
    parser.add_argument("--channel-axis", type=int, metavar="A", help="axis of the image that holds channels")
    parser.set_defaults(handler=run, _prog=parser.prog)


def run(args) -> int:
    """Try the method's settings grid on IMAGE against LABELS, print the table and store the best (unless --dry-run)."""
    from probseg.engine.api import load_model
    from probseg.core.callbacks import Callbacks
    from probseg.io.images import read_image
    from probseg.engine.tuning import tune

    image = read_checked(args.image, args.channel_axis, args.rgb)
    labels = read_image(args.labels)
    model = load_model(args.model, device=args.device)
    reporter = Reporter("tuning", "setting")
    try:
        result = tune(model, image, labels, save=not args.dry_run, seed=args.seed, channel_axis=args.channel_axis, rgb=args.rgb,
                      cost_limit=not args.no_cost_limit, callbacks=Callbacks(on_progress=reporter.progress, on_message=reporter.message))
    finally:
        reporter.close()
    _print_table(result)
    return 0


def _print_table(result) -> None:
    """One row per setting tried, the best marked; then what was stored."""
    names = [k for k in result.table[0] if k not in ("f1", "ap_dsb")]
    best = result.best_row
    header = names + ["f1", "ap_dsb"]
    rows = [[number(row[n]) for n in names] + [f"{row['f1']:.3f}", f"{row['ap_dsb']:.3f}"] for row in result.table]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row, cells in zip(result.table, rows):
        mark = "  <- best" if row is best else ""
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + mark)
    chosen = ", ".join(f"{n}={number(best[n])}" for n in names)
    if result.saved:
        print(f"stored {chosen} in {result.saved}; the next prediction with this model uses them")
    else:
        print(f"best: {chosen} (dry run: nothing stored)")
