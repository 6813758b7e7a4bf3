"""Run many ``probseg`` command lines in one process; print what each wrote to stderr and returned.

Used by tests/test_cli_bad_input.py: one interpreter start instead of one per
case keeps the table of bad inputs fast. Each case runs through
``probseg.cli.main`` exactly as the ``probseg`` entry point does, with every
warning shown every time, and its stderr captured on its own.

Usage: python _cli_cases.py < cases.json > results.json, where cases.json is a
list of argument lists and results.json a list of {"rc": int, "stderr": str}.
"""

import contextlib
import io
import json
import sys
import warnings

from probseg.cli import main

results = []
for argv in json.load(sys.stdin):
    stderr, stdout = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            rc = main(argv)
    results.append({"rc": rc, "stderr": stderr.getvalue()})
json.dump(results, sys.stdout)
