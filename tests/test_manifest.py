"""The napari manifest is valid, and the engine stays free of GUI imports."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "napari", "superqt", "vispy")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_manifest_validates():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-probseg" and manifest.display_name == "probseg"
    assert {w.display_name for w in manifest.contributions.widgets} == {"Train", "Predict", "Consensus", "Proofread"}
    assert {s.display_name for s in manifest.contributions.sample_data} == {"Nuclei (DSB2018)", "Synthetic touching blobs"}
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(MANIFEST)], capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_commands_resolve():
    npe2 = pytest.importorskip("npe2")
    pytest.importorskip("napari")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.id


def test_packaged_manifest_is_the_root_one():
    # An editable install finds the manifest inside the package; it must not drift.
    packaged = ROOT / "src" / "napari_probseg" / "napari.yaml"
    assert packaged.is_symlink() and packaged.resolve() == MANIFEST.resolve()


def test_engine_imports_no_gui():
    import probseg
    import probseg.consensus
    import probseg.methods

    names = ["probseg"]
    for package in (probseg, probseg.methods, probseg.consensus):
        # __main__ would run the command line; its imports are those of probseg.cli.
        names += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assert len(names) > 10  # the walk found the engine's modules


def test_plugin_package_import_is_light():
    """Importing napari_probseg (what npe2 does to find the manifest) pulls in neither Qt nor torch."""
    code = "import sys, napari_probseg; print(sorted(m for m in ('torch', 'qtpy', 'napari') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
