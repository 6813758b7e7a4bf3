"""The ``probseg`` command line.

::

    probseg train METHOD image.tif --out models/nuclei --steps 500
    probseg segment models/nuclei image.tif --out labels.tif --uncertainty-out uncertainty.tif
    probseg consensus samples.tif --resolution auto --out consensus.tif
    probseg evaluate labels.tif ground_truth.tif
    probseg info models/nuclei
    probseg methods

Each method's hyperparameters become flags of ``probseg train METHOD``; they
are generated from the method's Config (:mod:`probseg.cli.flags`), so a new
field needs no CLI code. Each command is a module here with its parser and
its ``run``; :mod:`probseg.cli.errors` turns every failure into one line and
an exit status.
"""

from __future__ import annotations

import argparse
import sys

import probseg
from probseg.cli import consensus, evaluate, info, instances, methods, segment, train, tune
from probseg.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, PROG, Parser, UsageError, exit_status, unrecognized

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "main"]


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
    parser = Parser(
        prog=PROG,
        description="Probabilistic instance segmentation of microscopy images.",
        epilog="Run 'probseg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {probseg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_parser(sub, with_methods=command == "train")
    segment.add_parser(sub, argv if command == "segment" else None)
    instances.add_parser(sub, argv if command == "instances" else None)
    tune.add_parser(sub)
    consensus.add_parser(sub)
    evaluate.add_parser(sub)
    info.add_parser(sub)
    methods.add_parser(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    # The first word that is not an option names the command (there are no
    # global options taking values).
    return next((a for a in argv if not a.startswith("-")), None)


def _run(argv: list[str]) -> int:
    parser = build_parser(_command_of(argv), argv)
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is None:
        raise UsageError("choose a command: train, segment, instances, tune, consensus, evaluate, info or methods (see 'probseg --help')")
    if extra:
        raise unrecognized(args, extra)
    return args.handler(args)


def main(argv=None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    return exit_status(lambda: _run(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
