"""The ``probseg`` command line, end to end.

The main flow (train, segment, evaluate, info) runs in real subprocesses via
``python -m probseg`` so that exit codes, stdout/stderr and the absence of
tracebacks are what a user sees. The many bad-input cases call
``probseg.cli.main`` in-process: same code path, without paying the torch
import (seconds on a small machine) once per case.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import probseg
from probseg import cli

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Small enough that three training steps and inference take a second or two.
FAST = ["--steps", "3", "--crop-size", "48", "--batch-size", "2", "--num-fmaps", "8", "--object-size", "14"]


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PROBSEG_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "probseg", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def blobs(size=64):
    """A noisy image of five round objects and its label image."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate([(14, 14), (14, 46), (46, 18), (46, 48), (30, 31)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = i
    rng = np.random.default_rng(0)
    image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
    return image.astype(np.float32), labels


def assert_one_line_error(result_or_stderr, code=None):
    stderr = result_or_stderr if isinstance(result_or_stderr, str) else result_or_stderr.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("probseg: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with an image, its ground truth and a model trained by the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    image, labels = blobs()
    tifffile.imwrite(folder / "image.tif", image)
    tifffile.imwrite(folder / "gt.tif", labels)
    result = run_cli("train", "cellulus", "image.tif", "--out", "model", "--device", "cpu", *FAST, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_train_saves_model_and_reports(work):
    folder, result = work
    assert (folder / "model" / "config.json").is_file()
    assert (folder / "model" / "weights.safetensors").is_file()
    out = result.stdout.strip().splitlines()
    assert len(out) == 1 and "model" in out[0] and "3 steps" in out[0] and " s)" in out[0]
    assert "training Cellulus on cpu" in result.stderr
    assert "loss=" in result.stderr  # the progress bar shows the loss
    assert "Traceback" not in result.stderr
    meta = json.loads((folder / "model" / "config.json").read_text())
    assert meta["config"]["object_size"] == 14.0 and meta["config"]["num_fmaps"] == 8
    assert meta["training"]["steps_done"] == 3


def test_segment_writes_every_output(work):
    folder, _ = work
    result = run_cli(
        "segment", "model", "image.tif", "--out", "out/labels.tif", "--samples", "3", "--samples-out", "out/samples.tif",
        "--embeddings-out", "out/emb.tif", "--uncertainty-out", "out/unc.npy", "--probability-out", "out/prob.tif",
        "--device", "cpu", "--tile-size", "64",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    assert "segmenting with a cellulus model on cpu" in result.stderr
    labels = tifffile.imread(folder / "out" / "labels.tif")
    samples = tifffile.imread(folder / "out" / "samples.tif")
    embeddings = tifffile.imread(folder / "out" / "emb.tif")
    uncertainty = np.load(folder / "out" / "unc.npy")
    assert labels.shape == (64, 64) and labels.dtype == np.uint16
    assert samples.shape == (3, 64, 64) and samples.dtype == np.uint16
    assert embeddings.shape == (2, 64, 64) and embeddings.dtype == np.float32
    assert uncertainty.shape == (64, 64) and uncertainty.dtype == np.float32
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0
    probability = tifffile.imread(folder / "out" / "prob.tif")
    assert probability.shape == (64, 64) and 0.0 <= probability.min() and probability.max() <= 1.0
    assert f"wrote {np.count_nonzero(np.unique(labels))} objects" in result.stdout
    assert not any(p.name.endswith(".tmp") for p in (folder / "out").iterdir())
    sidecar = json.loads((folder / "out" / "labels.tif.json").read_text())
    assert sidecar["method"] == "cellulus" and sidecar["n_samples"] == 3 and sidecar["seed"] == 0
    assert sidecar["objects"] == np.count_nonzero(np.unique(labels))
    meta = json.loads((folder / "model" / "config.json").read_text())
    assert sidecar["weights_sha256"] == meta["record"]["weights_sha256"]
    from probseg.core.config import fields_of
    from probseg.methods.cellulus import Settings

    assert set(sidecar["settings"]) == {f.name for f in fields_of(Settings)}


def test_evaluate_prints_one_json_object(work):
    folder, _ = work
    result = run_cli("evaluate", "gt.tif", "gt.tif", cwd=folder)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert {"f1", "seg", "ap_dsb", "n_pred", "n_gt", "count_error"} <= set(scores)
    assert scores["f1"] == scores["seg"] == scores["ap_dsb"] == 1.0
    assert scores["n_pred"] == scores["n_gt"] == 5 and scores["count_error"] == 0

    _, labels = blobs()
    labels[labels == 5] = 0  # one object missed
    np.save(folder / "pred.npy", labels)
    scores = json.loads(run_cli("evaluate", "pred.npy", "gt.tif", cwd=folder).stdout)
    assert scores["n_pred"] == 4 and scores["count_error"] == -1
    assert scores["f1"] == pytest.approx(2 * 4 / 9)


def test_info(work, capsys):
    folder, _ = work
    assert cli.main(["info", str(folder / "model")]) == 0
    text = "\n".join(" ".join(line.split()) for line in capsys.readouterr().out.splitlines())  # columns vary
    assert "cellulus (Cellulus)" in text
    assert "probseg-model version 1" in text
    assert "3 of 3 steps" in text and "on cpu" in text
    assert "object_size=14 px" in text and "num_fmaps=8" in text
    assert "input channels: 1" in text and "percentiles 1 to 99.8" in text
    assert "post-processing:" in text
    assert "made with" in text and "seed 0" in text

    assert cli.main(["info", str(folder / "model"), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["method"] == "cellulus" and meta["in_channels"] == 1


def test_bad_inputs_in_a_real_process(work, tmp_path):
    """No traceback reaches a real terminal, whatever the failure."""
    folder, _ = work
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((folder / "model" / "config.json").read_bytes())
    weights = (folder / "model" / "weights.safetensors").read_bytes()
    (broken / "weights.safetensors").write_bytes(weights[: len(weights) // 2])
    result = run_cli("segment", broken, folder / "image.tif", "--out", tmp_path / "x.tif", cwd=tmp_path)
    assert result.returncode == 1
    assert "weights.safetensors is corrupt or truncated" in assert_one_line_error(result)
    assert not (tmp_path / "x.tif").exists()

    # evaluate starts without torch, so this case costs about a second.
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00 not a tiff after all" * 4)
    result = run_cli("evaluate", "corrupt.tif", folder / "gt.tif", cwd=tmp_path)
    assert result.returncode == 1
    assert "corrupt.tif is not a readable TIFF file" in assert_one_line_error(result)


@pytest.fixture
def bad_files(tmp_path, work):
    folder, _ = work
    image, _ = blobs()
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00 definitely not a tiff" * 4)
    np.save(tmp_path / "constant.npy", np.full((64, 64), 7.0))
    nan = image.copy()
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "four_d.npy", np.random.default_rng(0).random((2, 2, 32, 32)))
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_bytes((folder / "model" / "config.json").read_bytes())
    (broken / "weights.safetensors").write_bytes((folder / "model" / "weights.safetensors").read_bytes()[:100])
    return tmp_path, folder


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "cellulus", "{t}/missing.tif", "--out", "{t}/m"], 1, "missing.tif does not exist"),
        (["train", "cellulus", "{t}/corrupt.tif", "--out", "{t}/m"], 1, "corrupt.tif is not a readable TIFF file"),
        (["train", "cellulus", "{t}/constant.npy", "--out", "{t}/m"], 1, "constant.npy is constant"),
        (["train", "cellulus", "{t}/nan.npy", "--out", "{t}/m"], 1, "nan.npy contains 1 NaN"),
        (["train", "cellulus", "{t}/four_d.npy", "--out", "{t}/m"], 1, "four_d.npy has 4 dimensions"),
        (["train", "nomethod", "{w}/image.tif", "--out", "{t}/m"], 2, "invalid choice: 'nomethod'"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{t}/m", "--no-such-flag", "1"], 2, "unrecognized argument(s): --no-such-flag"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{t}/m", "--object_size", "9"], 2, "did you mean --object-size?"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{t}/m", "--object-size", "big"], 2, "--object-size expects a number, got 'big'"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{t}/m", "--object-size", "1"], 2, "--object-size must be at least 4"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{w}/image.tif"], 1, "is a file; give a folder"),
        (["train", "cellulus", "{w}/image.tif", "--out", "{t}/m", "--device", "tpu"], 1, "unknown device 'tpu'"),
        (["segment", "{t}/no_model", "{w}/image.tif", "--out", "{t}/x.tif"], 1, "no_model does not exist"),
        (["segment", "{t}/broken_model", "{w}/image.tif", "--out", "{t}/x.tif"], 1, "weights.safetensors is corrupt or truncated"),
        (["segment", "{w}/model", "{t}/nan.npy", "--out", "{t}/x.tif"], 1, "nan.npy contains 1 NaN"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.jpg"], 1, "unsupported extension '.jpg'"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.tif", "--samples", "0"], 2, "--samples: must be a whole number from 1 to 256"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.tif", "--device", "tpu"], 1, "unknown device 'tpu'"),
        (["evaluate", "{w}/gt.tif", "{t}/four_d.npy"], 1, "must be equal"),
        (["evaluate", "{w}/gt.tif", "{t}/missing.npy"], 1, "missing.npy does not exist"),
        (["info", "{t}/no_model"], 1, "no_model does not exist"),
        (["info", "{w}/image.tif"], 1, "is a file"),
        ([], 2, "choose a command"),
        (["segment", "{w}/model"], 2, "required"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.tif", "--min-size", "-3"], 2, "--min-size must be at least 0"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.tif", "--foreground", "dark"], 2, "invalid choice: 'dark'"),
        (["segment", "{w}/model", "{w}/image.tif", "--out", "{t}/x.tif", "--min_size", "3"], 2, "did you mean --min-size?"),
        (["instances", "{t}/missing.zarr", "--out", "{t}/x.tif"], 1, "missing.zarr does not exist"),
        (["instances", "{w}/model", "--out", "{t}/x.tif"], 1, "model is not a"),
        (["tune", "{w}/model", "{w}/image.tif", "{t}/four_d.npy"], 1, "labels"),
        (["tune", "{w}/model", "{t}/four_d.npy", "{w}/gt.tif"], 1, "four_d.npy has 4 dimensions"),
    ],
)
def test_bad_input_is_one_line(bad_files, capsys, args, code, message):
    tmp, folder = bad_files
    argv = [a.format(t=tmp, w=folder) for a in args]
    assert cli.main(argv) == code
    line = assert_one_line_error(capsys.readouterr().err)
    assert message in line
    assert not (tmp / "m").exists()  # a failed start leaves no model folder
    assert not (tmp / "x.tif").exists()


def test_help_lists_generated_flags(capsys):
    assert cli.main(["train", "cellulus", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--object-size FLOAT" in text and "typical object diameter in the image" in text and "default 24" in text
    assert "--steps INT" in text and "--noise-probability" in text and "advanced Cellulus settings" in text
    # post-processing settings are not training flags
    assert "--min-size" not in text and "--bandwidth" not in text
    assert "--checkpoint-every" in text and "--channel-axis" in text
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"probseg {probseg.__version__}"
    assert cli.main(["methods"]) == 0
    assert "cellulus" in capsys.readouterr().out


def test_ctrl_c_saves_partial_model(work, tmp_path, capsys, monkeypatch):
    """A SIGINT during training stops after the step and keeps the model so far."""
    from probseg.engine import api

    folder, _ = work
    real_run = api.TrainingJob.run

    def run_and_interrupt(self, images, labels=None, callbacks=None, **kwargs):
        report = callbacks.on_progress

        def on_progress(step, total, loss):
            report(step, total, loss)
            if step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends

        callbacks.on_progress = on_progress
        return real_run(self, images, labels, callbacks, **kwargs)

    monkeypatch.setattr(api.TrainingJob, "run", run_and_interrupt)
    before = signal.getsignal(signal.SIGINT)
    argv = ["train", "cellulus", str(folder / "image.tif"), "--out", str(tmp_path / "partial"), "--device", "cpu", *FAST]
    argv[argv.index("--steps") + 1] = "50"
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"partial model (1 of 50 steps) is saved in {tmp_path / 'partial'}" in err
    meta = json.loads((tmp_path / "partial" / "config.json").read_text())
    assert meta["training"]["cancelled"] is True and meta["training"]["steps_done"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # the handler is removed again


def test_segment_stitch_consensus(work):
    folder, _ = work
    result = run_cli(
        "segment", "model", "image.tif", "--out", "stitched.tif", "--stitch", "consensus", "--window", "32",
        "--window-overlap", "16", "--samples", "2", "--device", "cpu", cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    labels = tifffile.imread(folder / "stitched.tif")
    assert labels.shape == (64, 64)
    assert "from 9 windows" in result.stdout and "auto resolution (cpm)" in result.stdout


def test_segment_stitch_refuses_outputs_it_cannot_make(work, capsys):
    folder, _ = work
    code = cli.main(["segment", str(folder / "model"), str(folder / "image.tif"), "--out", str(folder / "s.tif"),
                     "--stitch", "consensus", "--samples-out", str(folder / "x.tif")])
    assert code == 1
    assert "drop --samples-out" in assert_one_line_error(capsys.readouterr().err)


def test_concrete_dropout_from_labels_end_to_end(work):
    folder, _ = work
    result = run_cli(
        "train", "concrete-dropout", "image.tif", "--labels", "gt.tif", "--out", "cd", "--device", "cpu",
        "--steps", "3", "--crop-size", "48", "--batch-size", "2", "--num-fmaps", "4", cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "segment", "cd", "image.tif", "--out", "cd_labels.tif", "--samples", "3", "--uncertainty-out", "cd_unc.tif",
        "--probability-out", "cd_prob.tif", "--device", "cpu", cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    unc = tifffile.imread(folder / "cd_unc.tif")
    assert unc.shape == (64, 64) and 0.0 <= unc.min() and unc.max() <= 1.0
    missing = run_cli("train", "concrete-dropout", "image.tif", "--out", "cd2", *FAST[:2], cwd=folder)
    assert missing.returncode == 2 and "labels" in assert_one_line_error(missing)  # a missing argument: usage


def test_consensus_min_size_error_names_its_flag(work, tmp_path, capsys):
    # segment's consensus minimum size is --consensus-min-size (--min-size is the method's setting)
    folder, _ = work
    argv = ["segment", str(folder / "model"), str(folder / "image.tif"), "--out", str(tmp_path / "x.tif"),
            "--stitch", "consensus", "--consensus-min-size", "-1"]
    assert cli.main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "--consensus-min-size: must be a whole number from 0" in line


# -- raw output, instances, tune, run records -----------------------------------------------


def cli_model(folder):
    from probseg.engine.api import load_model

    return load_model(folder, device="cpu")


def _copy_model(folder, dest):
    import shutil

    shutil.copytree(folder / "model", dest)
    return dest


def test_segment_help_lists_the_methods_settings(work, capsys):
    folder, _ = work
    assert cli.main(["segment", str(folder / "model"), "x.tif", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Cellulus post-processing settings" in text
    assert "--min-size INT" in text and "--bandwidth FLOAT" in text and "--foreground {log-otsu,li,spread}" in text
    assert "--consensus-min-size" in text and "--raw-out" in text


def test_segment_settings_flags_reach_the_labels(work, tmp_path, capsys):
    folder, _ = work
    base = ["segment", str(folder / "model"), str(folder / "image.tif"), "--samples", "1", "--device", "cpu"]
    assert cli.main(base + ["--out", str(tmp_path / "a.tif")]) == 0
    assert cli.main(base + ["--out", str(tmp_path / "b.tif"), "--min-size", "100000"]) == 0
    capsys.readouterr()
    assert tifffile.imread(tmp_path / "a.tif").max() > 0
    assert tifffile.imread(tmp_path / "b.tif").max() == 0, "no object is that large"
    sidecar = json.loads((tmp_path / "b.tif.json").read_text())
    assert sidecar["settings"]["min_size"] == 100000


def test_raw_out_then_instances_with_other_settings(work, tmp_path, capsys):
    from probseg.io.rawstore import load_raw

    folder, _ = work
    raw = tmp_path / "raw.zarr"
    assert cli.main(["segment", str(folder / "model"), str(folder / "image.tif"), "--out", str(tmp_path / "seg.tif"),
                     "--samples", "3", "--raw-out", str(raw), "--device", "cpu"]) == 0
    assert f"wrote the raw output to {raw}" in capsys.readouterr().out
    stored, meta = load_raw(raw)
    assert stored.n_samples == 3 and meta["method"] == "cellulus"
    assert stored.planes[0]["embeddings"].shape == (4, 2, 64, 64)

    # same settings: the same labels as segment wrote, without the model folder's weights
    assert cli.main(["instances", str(raw), "--out", str(tmp_path / "same.tif"), "--samples-out", str(tmp_path / "s.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "same.tif"), tifffile.imread(tmp_path / "seg.tif"))
    assert tifffile.imread(tmp_path / "s.tif").shape == (3, 64, 64)

    # other settings: the method's flags, read from the store
    assert cli.main(["instances", str(raw), "--out", str(tmp_path / "big.tif"), "--min-size", "100000"]) == 0
    out = capsys.readouterr().out
    assert "wrote 0 objects" in out
    assert tifffile.imread(tmp_path / "big.tif").max() == 0
    sidecar = json.loads((tmp_path / "big.tif.json").read_text())
    model_meta = json.loads((folder / "model" / "config.json").read_text())
    assert sidecar["weights_sha256"] == model_meta["record"]["weights_sha256"]
    assert len(sidecar["weights_sha256"]) == 64
    assert sidecar["settings"]["min_size"] == 100000 and sidecar["method"] == "cellulus"
    assert sidecar["raw"] == str(raw.resolve())

    # segment refuses to overwrite a store
    assert cli.main(["segment", str(folder / "model"), str(folder / "image.tif"), "--out", str(tmp_path / "x.tif"),
                     "--raw-out", str(raw), "--device", "cpu"]) == 1
    assert "exists" in assert_one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "x.tif").exists()


def test_tune_dry_run_stores_nothing_and_tune_stores_settings(work, tmp_path, capsys):
    folder, _ = work
    model = _copy_model(folder, tmp_path / "model")
    assert not (model / "settings.json").exists()  # untuned: the defaults stay implicit
    assert cli.main(["tune", str(model), str(folder / "image.tif"), str(folder / "gt.tif"), "--dry-run", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "<- best" in out and "dry run: nothing stored" in out
    grid = cli_model(model).tune_grid()
    assert out.splitlines()[0].split() == list(grid) + ["f1", "ap_dsb"]
    assert len(out.splitlines()) == 2 + int(np.prod([len(v) for v in grid.values()]))  # header, rows, verdict
    assert not (model / "settings.json").exists()

    assert cli.main(["tune", str(model), str(folder / "image.tif"), str(folder / "gt.tif"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"in {model / 'settings.json'}" in out
    best = next(line for line in out.splitlines() if line.endswith("<- best")).split()
    stored = json.loads((model / "settings.json").read_text())
    assert stored["method"] == "cellulus"
    for name, cell in zip(grid, best):
        assert str(stored["settings"][name]) == cell or stored["settings"][name] == pytest.approx(float(cell))

    assert cli.main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.startswith("post-processing:"))
    assert f"min_size={stored['settings']['min_size']}" in line and "settings.json" in line

    # the next segment uses them: its sidecar says so
    assert cli.main(["segment", str(model), str(folder / "image.tif"), "--out", str(tmp_path / "t.tif"), "--samples", "1",
                     "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "t.tif.json").read_text())["settings"] == stored["settings"]


def test_info_shows_the_run_record(work, capsys):
    from safetensors.torch import load_file

    from probseg.core.record import array_digest, weights_digest

    folder, _ = work
    meta = json.loads((folder / "model" / "config.json").read_text())
    record = meta["record"]
    digest = weights_digest(load_file(str(folder / "model" / "weights.safetensors")))
    assert record["weights_sha256"] == digest
    image = tifffile.imread(folder / "image.tif")
    assert record["training_data"]["shapes"] == [[1, 64, 64]]
    assert record["seed"] == 0 and record["versions"]["probseg"] == probseg.__version__
    # the hash is of the planes the network learnt from (normalised), reproducible from the image
    from probseg.nn.trainset import training_set

    assert record["training_data"]["sha256"] == array_digest(list(training_set(image).planes))

    assert cli.main(["info", str(folder / "model")]) == 0
    text = capsys.readouterr().out
    assert f"weights sha256: {digest}" in " ".join(text.split())
    assert f"sha256 {record['training_data']['sha256'][:12]}" in text
    assert "1x64x64" in text
