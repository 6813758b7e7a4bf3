"""Rewrite the ``probseg ... --help`` blocks of docs/cli.md from the real parser.

::

    python docs/cli_help.py           # rewrite docs/cli.md in place
    python docs/cli_help.py --check   # exit 1 if docs/cli.md is out of date

Each ``## probseg ...`` section's first ``text`` block is the help of that
command at 100 columns. ``segment`` and ``instances`` show a Cellulus model's
post-processing flags, as they do when MODEL_DIR names a Cellulus model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

DOC = Path(__file__).with_name("cli.md")
WIDTH = "100"
SECTION = re.compile(r"^## (probseg(?: [a-z-]+)*)\n\n```text\n.*?```\n", re.M | re.S)


def help_text(words: list[str], folder: str) -> str:
    from probseg.cli import build_parser

    command = words[0] if words else None
    argv = list(words)
    if command in ("segment", "instances"):
        argv.append(folder)  # a folder whose config.json names the method gives the settings flags
    parser = build_parser(command, argv)
    for word in words:  # walk down to the subcommand's parser
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        parser.print_help()
    return out.getvalue()


def render(text: str) -> str:
    os.environ["COLUMNS"] = WIDTH
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"method": "cellulus"}))

        def block(match: re.Match) -> str:
            words = match.group(1).split()[1:]
            return f"## {match.group(1)}\n\n```text\n{help_text(words, folder).rstrip()}\n```\n"

        return SECTION.sub(block, text)


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    old = DOC.read_text()
    new = render(old)
    if check:
        if new != old:
            print(f"{DOC} is out of date; run 'python docs/cli_help.py'", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
