"""Hostile arguments (issue 20, items 4, 5 and 7): refused in one line, before any work, by the CLI and the API alike.

The command-line table runs every case in one interpreter with the network
disabled (:data:`NO_NETWORK` makes every draw raise), so a case passes only if
it is refused before the network runs: a refusal after it would print
``internal error (RuntimeError: the network ran)`` instead of the expected
words. Each case must also exit with the status docs/cli.md gives (2 for a
malformed command line, 1 for inputs that cannot be used), print exactly one
``probseg: error:`` line and nothing before it, and leave every file in the
folder byte-identical. The Python-API table checks the exception type and the
words of each refusal, again with the network and the training loop disabled.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from probseg.core.errors import InputError
from probseg.engine import api, pipeline
from probseg.engine.cost import LIMIT_SECONDS, WARN_SECONDS
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs
from test_cli_bad_input import _snapshot

# Every entry to the network goes through these two (the method contract: draw is called only by them).
NO_NETWORK = """
from probseg.engine import pipeline
def _refuse(*args, **kwargs):
    raise RuntimeError("the network ran")
pipeline.plane_draws = pipeline.plane_raw = _refuse
"""

# (case id, command line, exit status, words the one line of stderr must contain)
CASES = [
    # -- settings that cannot work for the run, refused before the network (item 4)
    ("ia-mask-without-mask", "segment ia img.tif --out new.tif --foreground mask", 1, "--foreground-mask, or a layer"),
    ("ia-mask-without-mask-raw-out", "segment ia img.tif --out new.tif --raw-out r.zarr --foreground mask", 1, "needs a foreground mask"),
    ("ia-network-without-network", "segment ia img.tif --out new.tif --foreground network", 1, "no foreground network"),
    ("ia-network-with-samples-out", "segment ia img.tif --out new.tif --samples-out s.tif --samples 2 --foreground network", 1, "no foreground network"),
    ("spread-one-sample", "segment model img.tif --out new.tif --foreground spread --samples 1", 1, "at least 2 samples"),
    ("spread-one-sample-samples-out", "segment model img.tif --out new.tif --samples-out s.tif --foreground spread --samples 1", 1, "at least 2 samples"),
    ("spread-one-sample-raw-out", "segment model img.tif --out new.tif --raw-out r.zarr --foreground spread --samples 1", 1, "at least 2 samples"),
    ("instances-spread-one-sample", "instances r1.zarr --out new.tif --foreground spread", 1, "at least 2 samples"),
    ("instances-ia-mask-without-mask", "instances ia1.zarr --out new.tif --foreground mask", 1, "--foreground-mask, or a layer"),
    ("instances-ia-network-without-network", "instances ia1.zarr --out new.tif --foreground network", 1, "no foreground network"),
    # -- tune: labels checked before the network
    ("tune-labels-wrong-shape", "tune model img.tif samples.tif", 1, "labels has shape (3, 64, 64)"),
    ("tune-labels-no-object", "tune model img.tif zeros.tif", 1, "no object to tune on"),
    ("tune-labels-fractions", "tune model img.tif lab25.tif", 1, "integer instance ids"),
    ("tune-labels-wrong-shape-dry-run", "tune ia img.tif samples.tif --dry-run", 1, "labels has shape"),
    ("tune-ia-no-object", "tune ia img.tif zeros.tif --dry-run", 1, "no object to tune on"),
    # -- predicted cost (item 4; the issue's --patch-stride 4 hang)
    ("cost-segment", "segment ia_slow big.tif --out new.tif", 1, "--no-cost-limit"),
    ("cost-segment-raw-out", "segment ia_slow big.tif --out new.tif --raw-out r.zarr", 1, "hours on CPU"),
    ("cost-segment-one-sample", "segment ia_slow big.tif --out new.tif --samples 1", 1, "a larger --patch-stride"),
    ("cost-tune", "tune ia_slow big.tif biglab.tif --dry-run", 1, "--no-cost-limit"),
    # -- outputs that cannot be written, refused before the network
    ("out-under-a-file", "segment model img.tif --out img.tif/x.tif", 1, "img.tif is a file, not a folder"),
    ("out-deep-under-a-file", "segment model img.tif --out img.tif/a/b/x.tif", 1, "is a file, not a folder"),
    ("samples-out-under-a-file", "segment model img.tif --out new.tif --samples-out lab.tif/s.tif", 1, "--samples-out lab.tif/s.tif"),
    ("features-out-under-a-file", "segment model img.tif --out new.tif --features-out lab.tif/f.csv", 1, "is a file, not a folder"),
    ("raw-out-under-a-file", "segment model img.tif --out new.tif --raw-out img.tif/r.zarr", 1, "--raw-out img.tif/r.zarr"),
    ("instances-out-under-a-file", "instances r1.zarr --out img.tif/x.tif", 1, "is a file, not a folder"),
    ("raw-out-not-zarr", "segment model img.tif --out new.tif --raw-out x.tif", 1, "ending in .zarr"),
    ("raw-out-no-suffix", "segment model img.tif --out new.tif --raw-out rawstore", 1, "ending in .zarr"),
    ("train-out-under-a-file", "train cellulus img.tif --out img.tif/m --steps 1", 1, "Not a directory"),
    ("instances-symlink-loop", "instances loop.zarr --out new.tif", 1, "symbolic link loop"),
    # -- silent acceptances of nonsense (item 6's argument cases)
    ("reviewed-fractions", "train inpaintaff img.tif --labels lab25.tif --reviewed mask.tif --out fresh --steps 1", 1, "whole object ids"),
    ("reviewed-fractions-spoco", "train spoco img.tif --labels lab25.tif --reviewed mask.tif --out fresh --steps 1", 1, "whole object ids"),
    ("reviewed-nan-mask", "train inpaintaff img.tif --labels lab.tif --reviewed nanmask.tif --out fresh --steps 1", 1, "NaN"),
    ("reviewed-nan-mask-spoco", "train spoco img.tif --labels lab.tif --reviewed nanmask.tif --out fresh --steps 1", 1, "NaN"),
    ("background-id-1e20", f"train inpaintaff img.tif --labels lab.tif --reviewed mask.tif --out fresh --steps 1 --background-id {10**20}", 2, "--background-id must be at most 4294967295"),
    ("background-id-2-32", f"train spoco img.tif --labels lab.tif --out fresh --steps 1 --background-id {2**32}", 2, "--background-id"),
    ("ignore-id-huge", f"train concrete-dropout img.tif --labels lab.tif --out fresh --steps 1 --ignore-id {10**20}", 2, "--ignore-id"),
    ("min-size-1e12", "segment model img.tif --out new.tif --min-size 1000000000000", 2, "--min-size must be at most 100000000 px"),
    ("min-size-1e30", "segment model img.tif --out new.tif --min-size 1e30", 2, "--min-size expects an integer"),
    ("min-size-fraction", "segment model img.tif --out new.tif --min-size 2.5", 2, "--min-size expects an integer"),
    ("instances-min-size-1e12", "instances r1.zarr --out new.tif --min-size 1000000000000", 2, "--min-size must be at most"),
    ("ia-min-size-1e12", "segment ia img.tif --out new.tif --min-size 1000000000000", 2, "--min-size must be at most"),
    # -- out-of-range method settings: exit status 2, as docs/cli.md says (item 7)
    ("bandwidth-negative", "segment model img.tif --out new.tif --bandwidth -1", 2, "--bandwidth must be at least 0"),
    ("bandwidth-nan", "segment model img.tif --out new.tif --bandwidth nan", 2, "--bandwidth must be a number, got NaN"),
    ("alpha-above", "segment ia img.tif --out new.tif --alpha 6", 2, "--alpha must be at most 5"),
    ("probability-text", "segment ia img.tif --out new.tif --probability high", 2, "--probability expects a number"),
    ("foreground-not-a-choice", "segment model img.tif --out new.tif --foreground bogus", 2, "invalid choice"),
    ("steps-text", "train cellulus img.tif --out fresh --steps abc", 2, "--steps expects an integer"),
    ("steps-zero", "train cellulus img.tif --out fresh --steps 0", 2, "--steps must be at least 1"),
    ("steps-huge", "train cellulus img.tif --out fresh --steps 10000000", 2, "--steps must be at most 1000000"),
    ("learning-rate-zero", "train cellulus img.tif --out fresh --steps 1 --learning-rate 0", 2, "--learning-rate must be at least"),
    ("learning-rate-inf", "train cellulus img.tif --out fresh --steps 1 --learning-rate inf", 2, "--learning-rate must be at most"),
    ("patch-stride-above-patch", "train inpaintaff img.tif --out fresh --steps 1 --patch-stride 128", 2, "exceeds the patch size"),
    ("labels-missing", "train spoco img.tif --out fresh --steps 1", 2, "give a labels image"),
    ("reviewed-against-label-mode", "train inpaintaff img.tif --labels lab.tif --reviewed mask.tif --label-mode dense --out fresh --steps 1", 2, "--label-mode dense"),
    ("checkpoint-every-negative", "train cellulus img.tif --out fresh --steps 1 --checkpoint-every -1", 2, "--checkpoint-every"),
    # -- depends on the images, not on the command line alone: exit status 1
    ("object-size-beyond-images", "train cellulus img.tif --out fresh --steps 1 --object-size 2000", 1, "at most 32 px"),
]


def _segment(root: Path, *argv: str) -> None:
    from probseg.cli import main

    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(list(argv)) == 0
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_arguments")
    image, labels = touching_blobs(shape=(64, 64), object_size=12, seed=0)
    tifffile.imwrite(root / "img.tif", image.astype(np.float32))
    tifffile.imwrite(root / "lab.tif", labels.astype(np.uint16))
    tifffile.imwrite(root / "lab25.tif", np.where(labels > 0, labels + 0.5, 0).astype(np.float32))
    tifffile.imwrite(root / "zeros.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(root / "mask.tif", (labels > 0).astype(np.uint8))
    nan_mask = np.zeros((64, 64), np.float32)
    nan_mask[:8] = np.nan
    tifffile.imwrite(root / "nanmask.tif", nan_mask)
    tifffile.imwrite(root / "samples.tif", perturbed_samples(labels, 3, seed=0).astype(np.uint16), photometric="minisblack")
    big = np.tile(image, (12, 12)).astype(np.float32)  # 768 x 768
    tifffile.imwrite(root / "big.tif", big)
    tifffile.imwrite(root / "biglab.tif", np.tile(labels, (12, 12)).astype(np.uint16))
    (root / "loop.zarr").symlink_to("loop2.zarr")
    (root / "loop2.zarr").symlink_to("loop.zarr")
    api.train("cellulus", image, config={"object_size": 12.0}, steps=1, out=root / "model")
    api.train("inpaintaff", image, steps=1, out=root / "ia")
    api.train("inpaintaff", image, config={"patch_stride": 4}, steps=1, out=root / "ia_slow")
    _segment(root, "segment", "model", "img.tif", "--out", "r1.tif", "--raw-out", "r1.zarr", "--samples", "1")
    _segment(root, "segment", "ia", "img.tif", "--out", "ia1.tif", "--raw-out", "ia1.zarr", "--samples", "1")
    return root


def _run_without_network(root: Path, commands: list[str]) -> list[dict]:
    """Each command line through ``probseg.cli.main`` in one fresh interpreter whose network raises if it runs."""
    runner = Path(__file__).with_name("_cli_cases.py")
    code = NO_NETWORK + f"import runpy\nrunpy.run_path({str(runner)!r}, run_name='__main__')\n"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PROBSEG_DEBUG", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, input=json.dumps([c.split() for c in commands]),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_hostile_argument_is_refused_before_any_work(workdir):
    before = _snapshot(workdir)
    results = _run_without_network(workdir, [command for _, command, _, _ in CASES])
    failures = []
    for (name, _, status, words), result in zip(CASES, results):
        lines = result["stderr"].strip().splitlines()
        if result["rc"] != status:
            failures.append(f"{name}: exit status {result['rc']}, expected {status}: {result['stderr']!r}")
        elif len(lines) != 1 or not lines[0].startswith("probseg: error: "):
            failures.append(f"{name}: stderr is not one error line: {result['stderr']!r}")
        elif words not in lines[0]:
            failures.append(f"{name}: {words!r} not in {lines[0]!r}")
    assert not failures, "\n".join(failures)
    assert _snapshot(workdir) == before


def test_the_table_holds_enough_cases():
    assert len(CASES) >= 50 and len({name for name, *_ in CASES}) == len(CASES)


# -- the Python API -----------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Neither the network nor the training loop may run: every case must be refused before them."""
    import probseg.nn.training as training

    def refuse(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(pipeline, "plane_draws", refuse)
    monkeypatch.setattr(pipeline, "plane_raw", refuse)
    monkeypatch.setattr(training, "train_loop", refuse)


@pytest.fixture(scope="module")
def models(workdir):
    from probseg.io.rawstore import load_raw

    image = tifffile.imread(workdir / "img.tif")
    return {
        "image": image, "labels": tifffile.imread(workdir / "lab.tif"),
        "cellulus": api.load_model(workdir / "model", device="cpu"),
        "ia": api.load_model(workdir / "ia", device="cpu"),
        "ia_slow": api.load_model(workdir / "ia_slow", device="cpu"),
        "raw1": load_raw(workdir / "r1.zarr")[0],
        "big": tifffile.imread(workdir / "big.tif"),
        "root": workdir,
    }


def _train(m, **kwargs):
    return api.train("cellulus", m["image"], **{"config": {"object_size": 12.0}, "steps": 1, **kwargs})


def _predict(name, **kwargs):
    return lambda m: m[name].predict(m["image"] if "image" not in kwargs else m[kwargs.pop("image")], **kwargs)


def _tune(labels, **kwargs):
    from probseg.engine.tuning import tune

    return lambda m: tune(m["cellulus"], m["image"], labels(m), save=False, **kwargs)


def _reviewed(labels, mask):
    from probseg.core.labels import reviewed_labels

    return lambda m: reviewed_labels(labels(m), mask(m))


_NAN_MASK = lambda m: np.where(np.arange(64)[:, None] < 8, np.nan, 0.0) * np.ones((64, 64))  # noqa: E731

# (case id, call, exception type, words of its message)
API_CASES = [
    ("steps-text", lambda m: _train(m, steps="5"), ValueError, "steps must be a whole number, got '5'"),
    ("steps-bool", lambda m: _train(m, steps=True), ValueError, "steps must be a whole number, got True"),
    ("steps-fraction", lambda m: _train(m, steps=2.5), ValueError, "steps must be a whole number, got 2.5"),
    ("steps-zero", lambda m: _train(m, steps=np.int64(0)), ValueError, "steps must be at least 1"),
    ("config-steps-text", lambda m: _train(m, steps=None, config={"steps": "5"}), ValueError, "steps"),
    ("learning-rate-text", lambda m: _train(m, config={"learning_rate": "0.1"}), ValueError, "learning_rate must be a number"),
    ("learning-rate-bool", lambda m: _train(m, config={"learning_rate": True}), ValueError, "learning_rate must be a number"),
    ("learning-rate-nan", lambda m: _train(m, config={"learning_rate": np.float32("nan")}), ValueError, "learning_rate must be a number, got NaN"),
    ("object-size-text", lambda m: _train(m, config={"object_size": "12"}), ValueError, "object_size"),
    ("unknown-setting", lambda m: _train(m, config={"stepz": 5}), ValueError, "unknown setting(s) stepz"),
    ("config-not-a-mapping", lambda m: _train(m, config="steps=5"), TypeError, "config must be a Config"),
    ("checkpoint-every-negative", lambda m: _train(m, checkpoint_every=-1, out=m["root"] / "never"), ValueError, "checkpoint_every must be a whole number from 0"),
    ("checkpoint-every-text", lambda m: _train(m, checkpoint_every="1"), ValueError, "checkpoint_every"),
    ("checkpoint-every-fraction", lambda m: _train(m, checkpoint_every=0.5), ValueError, "checkpoint_every"),
    ("seed-negative", lambda m: _train(m, seed=-1), ValueError, "seed"),
    ("out-existing-model", lambda m: _train(m, out=m["root"] / "model"), FileExistsError, "overwrite=True"),
    ("out-is-a-file", lambda m: _train(m, out=m["root"] / "img.tif"), ValueError, "is a file"),
    ("out-under-a-file", lambda m: _train(m, out=m["root"] / "img.tif" / "m"), ValueError, "not a writable folder"),
    ("ia-background-id-huge", lambda m: api.train("inpaintaff", m["image"], steps=1, config={"background_id": 10**20}), ValueError, "background_id must be at most 4294967295"),
    ("n-samples-text", _predict("cellulus", n_samples="3"), ValueError, "n_samples"),
    ("n-samples-bool", _predict("cellulus", n_samples=True), ValueError, "n_samples"),
    ("n-samples-zero", _predict("cellulus", n_samples=np.int64(0)), ValueError, "n_samples"),
    ("predict-seed-huge", _predict("cellulus", seed=2**40), ValueError, "seed"),
    ("min-size-huge", _predict("cellulus", settings={"min_size": 10**12}), ValueError, "min_size must be at most 100000000"),
    ("min-size-text", _predict("cellulus", settings={"min_size": "5"}), ValueError, "min_size must be a whole number"),
    ("bandwidth-negative-numpy", _predict("cellulus", settings={"bandwidth": np.float32(-1)}), ValueError, "bandwidth must be at least"),
    ("settings-not-a-mapping", _predict("cellulus", settings=["min_size"]), TypeError, "settings must be a"),
    ("spread-one-sample", _predict("cellulus", n_samples=1, settings={"foreground": "spread"}), ValueError, "at least 2 samples"),
    ("ia-mask-without-mask", _predict("ia", settings={"foreground": "mask"}), ValueError, "--foreground-mask"),
    ("ia-network-without-network", _predict("ia", settings={"foreground": "network"}), ValueError, "no foreground network"),
    ("ia-cost", _predict("ia_slow", image="big"), ValueError, "cost_limit=False"),
    ("ia-cost-raw", lambda m: m["ia_slow"].predict_raw(m["big"], 8), ValueError, "cost_limit=False"),
    ("postprocess-spread-one-sample", lambda m: m["cellulus"].postprocess(m["raw1"], {"foreground": "spread"}), ValueError, "at least 2 samples"),
    ("tune-labels-shape", _tune(lambda m: np.ones((32, 32), np.uint16)), ValueError, "labels has shape (32, 32)"),
    ("tune-labels-empty", _tune(lambda m: np.zeros((64, 64), np.uint16)), ValueError, "no object to tune on"),
    ("tune-labels-fractions", _tune(lambda m: m["labels"] + 0.5), ValueError, "integer instance ids"),
    ("tune-grid-spread", _tune(lambda m: m["labels"], grid={"foreground": ["log-otsu", "spread"]}), ValueError, "at least 2 samples"),
    ("tune-grid-unknown", _tune(lambda m: m["labels"], grid={"alpha": [1.0]}), ValueError, "no setting 'alpha'"),
    ("reviewed-fractions", _reviewed(lambda m: m["labels"] + 0.5, lambda m: m["labels"] > 0), ValueError, "whole object ids"),
    ("reviewed-nan-mask", _reviewed(lambda m: m["labels"], _NAN_MASK), ValueError, "512 NaN value(s)"),
    ("reviewed-negative", _reviewed(lambda m: -m["labels"].astype(np.int32), lambda m: m["labels"] > 0), ValueError, "negative ids"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case[0])
def test_the_api_refuses_like_the_cli(models, no_network, case):
    _, call, kind, words = case
    before = _snapshot(models["root"])
    with pytest.raises(kind) as caught:
        call(models)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert _snapshot(models["root"]) == before


def test_numpy_numbers_are_numbers(models):
    model = _train(models, steps=np.int64(1), config={"object_size": np.float32(12.0), "learning_rate": np.float64(1e-3),
                                                      "batch_size": np.int32(2)})
    assert model.config.steps == 1 and type(model.config.steps) is int
    assert type(model.config.object_size) is float and type(model.config.batch_size) is int
    assert api.make_config("cellulus", {"steps": 3.0}).steps == 3  # a whole float is the whole number


def test_train_overwrite_replaces_only_when_asked(models, tmp_path):
    _train(models, out=tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _train(models, out=tmp_path / "m")
    _train(models, out=tmp_path / "m", overwrite=True)


def test_model_files_have_the_umasks_permissions(models, tmp_path):
    old = os.umask(0o022)
    try:
        _train(models, out=tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("config.json", "weights.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / "m" / name).st_mode) == 0o644, name


def test_a_long_prediction_is_announced_and_can_be_insisted_on(models, no_network):
    from probseg.core.callbacks import Callbacks

    model, messages = models["ia_slow"], []
    medium = np.tile(models["image"], (2, 2))  # 128 x 128: the issue's 2,312 tiles with 8 samples
    assert WARN_SECONDS < model.estimate_seconds(medium.shape, 8) < LIMIT_SECONDS
    with pytest.raises(AssertionError, match="the network ran"):
        model.predict(medium, 8, callbacks=Callbacks(on_message=messages.append))
    assert len(messages) == 1 and "will take about" in messages[0] and "--patch-stride" in messages[0]
    messages.clear()
    with pytest.raises(AssertionError, match="the network ran"):  # past the refusal, to the network
        model.predict(models["big"], 8, cost_limit=False, callbacks=Callbacks(on_message=messages.append))
    assert "hours" in messages[0]
    assert model.estimate_seconds((64, 64), 8) < WARN_SECONDS  # the default stride: no notice
    assert models["cellulus"].estimate_seconds((4096, 4096), 8) is None  # methods that cannot tell say nothing


def test_the_patch_count_is_the_issues(models):
    from probseg.methods.inpaintaff.split import patch_starts

    config = models["ia_slow"].config
    assert len(patch_starts(128, config.patch_size, config.patch_stride)) ** 2 * 8 == 2312


def test_tune_stores_nothing_when_every_setting_scores_zero(workdir, tmp_path):
    import shutil

    from probseg.engine.tuning import tune

    shutil.copytree(workdir / "model", tmp_path / "model")
    model = api.load_model(tmp_path / "model", device="cpu")
    whole = np.ones((64, 64), np.uint16)  # one object over the whole image: no predicted object matches it
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match="scored F1 = 0"):
        tune(model, tifffile.imread(workdir / "img.tif"), whole)
    assert _snapshot(tmp_path) == before and not (tmp_path / "model" / "settings.json").exists()


def test_tune_refuses_an_unwritable_model_folder_before_the_network(models, no_network, monkeypatch):
    from probseg.engine.tuning import tune

    folder = Path(models["cellulus"].folder)
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == folder else real(path, mode, **kw))
    with pytest.raises(InputError, match="not writable.*--dry-run"):
        tune(models["cellulus"], models["image"], models["labels"])
