"""One-line errors and exit statuses of the ``probseg`` command line.

Anything the user can get wrong ends in one line, ``probseg: error: ...``, on
stderr and a non-zero exit status, never a traceback: 2 for a malformed
command line, 1 for unusable inputs or failures, 130 for Ctrl-C. Set the
environment variable ``PROBSEG_DEBUG=1`` to see the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Callable

from probseg.core.errors import Cancelled, ProbsegError

PROG = "probseg"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class UsageError(Exception):
    """A malformed command line; reported in one line with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line without the usage block."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def unrecognized(args, extra: list[str]) -> UsageError:
    """The error for words no parser took; names the flag meant when one is close (``--object_size``)."""
    message = f"unrecognized argument(s): {' '.join(extra)}"
    flags = getattr(args, "_flags", None)
    first = next((a.split("=", 1)[0] for a in extra if a.startswith("--")), None)
    if flags and first:
        # Users type --object_size for --object-size; say which flag was meant.
        close = difflib.get_close_matches(first.replace("_", "-"), flags, n=1)
        if close:
            message += f"; did you mean {close[0]}?"
    return UsageError(f"{message} (see '{getattr(args, '_prog', PROG)} --help')")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(text: str) -> None:
    print(f"{PROG}: error: {_one_line(text)}", file=sys.stderr)


def _os_message(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def exit_status(run: Callable[[], int]) -> int:
    """Call ``run`` and return its exit status; every error becomes one line on stderr and its status."""
    try:
        return run()
    except SystemExit as exc:  # --help and --version end through here
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
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
