"""docs/cli.md shows the real help of every command (regenerate with `python docs/cli_help.py`)."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_matches_the_parser(monkeypatch):
    spec = importlib.util.spec_from_file_location("cli_help", DOCS / "cli_help.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("COLUMNS", module.WIDTH)
    text = (DOCS / "cli.md").read_text()
    assert module.SECTION.findall(text), "no help blocks found in docs/cli.md"
    assert module.render(text) == text, "docs/cli.md is out of date; run 'python docs/cli_help.py'"
