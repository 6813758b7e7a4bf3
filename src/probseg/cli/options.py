"""Options several commands share: number checks while parsing, devices, and the outputs made from samples."""

from __future__ import annotations

import argparse

from probseg.core import bounds
from probseg.core.errors import InputError

DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps (default: %(default)s)"
FOREGROUND_HELP = ("foreground mask of the image: objects are only found inside it. Labels or a boolean mask "
                   "(foreground > 0), a probability map in 0..1 (foreground >= 0.5, e.g. exported from ilastik) or other "
                   "numbers (foreground > 0); a (Y, X) mask applies to every plane of a stack")


def bounded(bound: bounds.Bound):
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


def add_sample_outputs(parser: argparse.ArgumentParser) -> None:
    """The optional outputs made from the samples, shared by ``segment`` and ``instances``."""
    parser.add_argument("--samples-out", metavar="SAMPLES", help="write the sampled label images, stacked on a first axis")
    parser.add_argument("--uncertainty-out", metavar="UNC", help="write the per-pixel uncertainty of the samples (float32, 0 to 1)")
    parser.add_argument("--probability-out", metavar="PROB", help="write each pixel's object probability over the samples (float32, 0 to 1)")
    parser.add_argument("--features-out", metavar="CSV", help="write a table of the objects, one row per label, for methods that describe their objects (e.g. latent codes, box, presence, size)")


def add_no_cost_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cost-limit", action="store_true",
                        help="run even a prediction the method estimates to take more than an hour (a notice still says how long)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist already (inputs are never replaced)")
