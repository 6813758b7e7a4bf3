"""``probseg evaluate``: score a label image against ground truth, as one JSON object."""

from __future__ import annotations

import json

from probseg.core.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score a segmentation against ground truth",
        description="Compare a predicted label image with a ground-truth label image and print "
        "one JSON object: f1 (IoU > 0.5), seg, ap_dsb, n_pred, n_gt, count_error.",
    )
    parser.add_argument("pred", metavar="PRED", help="predicted label image")
    parser.add_argument("gt", metavar="GT", help="ground-truth label image of the same shape")
    parser.set_defaults(handler=run, _prog=parser.prog)


def run(args) -> int:
    """Print the scores of PRED against GT."""
    from probseg.io.images import read_image
    from probseg.evaluation.metrics import evaluate

    pred = read_image(args.pred)
    gt = read_image(args.gt)
    if pred.shape != gt.shape:
        raise InputError(f"{args.pred} has shape {pred.shape} but {args.gt} has shape {gt.shape}; they must be equal")
    print(json.dumps(evaluate(pred, gt)))
    return 0
