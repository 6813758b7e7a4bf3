"""``probseg consensus`` and the engine's window stitching."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from probseg import cli
from probseg.consensus import segment_stitched, window_origins
from probseg.core.errors import InputError
from probseg.core.inputs import to_planes
from probseg.evaluation.metrics import f1_score
from probseg.engine.model import SegmentationModel
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("consensus")
    _, truth = touching_blobs((96, 96), object_size=14, seed=2)
    samples = perturbed_samples(truth, 8, seed=1)
    tifffile.imwrite(folder / "gt.tif", truth.astype(np.uint16))
    tifffile.imwrite(folder / "samples.tif", samples.astype(np.uint16))
    return folder, truth, samples


def test_auto_consensus_writes_labels_and_sweep(files, capsys):
    folder, truth, _ = files
    code = cli.main(["consensus", str(folder / "samples.tif"), "--out", str(folder / "c.tif"), "--sweep-out", str(folder / "s.csv")])
    out = capsys.readouterr().out
    assert code == 0
    assert "auto resolution (cpm)" in out and "wrote" in out
    labels = tifffile.imread(folder / "c.tif")
    assert f1_score(labels, truth) > 0.9
    rows = (folder / "s.csv").read_text().splitlines()
    assert rows[0] == "resolution,mean_nmi,objects" and len(rows) == 22


def test_consensus_in_a_real_process(files):
    """What a user sees in a terminal: exit status, stdout lines, one-line errors, no traceback."""
    folder, truth, _ = files
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    env.pop("PROBSEG_DEBUG", None)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "probseg", "consensus", *args], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=300)

    ok = run("samples.tif", "--out", "sub.tif", "--resolution", "0.003")
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and "Traceback" not in ok.stderr
    assert f1_score(tifffile.imread(folder / "sub.tif"), truth) > 0.9
    bad = run("missing.tif", "--out", "x.tif")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == ["probseg: error: missing.tif does not exist"]


def test_region_is_written_into_existing_labels(files, capsys):
    folder, truth, _ = files
    tifffile.imwrite(folder / "base.tif", truth.astype(np.uint16))
    code = cli.main(["consensus", str(folder / "samples.tif"), "--out", str(folder / "r.tif"), "--resolution", "0.5",
                     "--region", "20,20,60,60", "--into", str(folder / "base.tif")])
    assert code == 0, capsys.readouterr().err
    result = tifffile.imread(folder / "r.tif")
    outside = np.ones(truth.shape, bool)
    outside[20:60, 20:60] = False
    np.testing.assert_array_equal(result[outside], truth[outside])
    # At a resolution this high the region shatters into many pieces.
    assert np.unique(result[20:60, 20:60]).size > np.unique(truth[20:60, 20:60]).size


@pytest.mark.parametrize(
    "args,message",
    [
        (["--resolution", "-1"], "positive number or 'auto'"),
        (["--region", "1,2,3"], "four integers"),
        (["--into", "gt.tif"], "--into needs --region"),
        (["--resolution", "0.1", "--sweep-out", "s.csv"], "--sweep-out needs --resolution auto"),
        (["--objective", "louvain"], "invalid choice"),
        (["--min-foreground", "2"], "--min-foreground"),
    ],
)
def test_bad_consensus_options_are_one_line(files, capsys, monkeypatch, args, message):
    folder, _, _ = files
    monkeypatch.chdir(folder)
    code = cli.main(["consensus", "samples.tif", "--out", "x.tif", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and message in err[0]


def test_float_image_is_not_taken_for_samples(files, capsys, tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((2, 8, 8), 0.5, np.float32))
    assert cli.main(["consensus", str(tmp_path / "f.tif"), "--out", str(tmp_path / "x.tif")]) == 1
    assert "integer instance labels" in capsys.readouterr().err


@dataclasses.dataclass
class _NoSettings:
    pass


class _TruthModel(SegmentationModel):
    """Stands in for a trained model: a window's "segmentation" is the truth
    inside it under window-specific ids, with objects cut by the window edge
    left as their visible parts."""

    method = "truth"
    settings_class = _NoSettings

    def __init__(self, truth):
        super().__init__(None, None, 1, {}, device="cpu")
        self.truth = truth

    def prepare(self, image, channel_axis=None, rgb=False):
        return to_planes(image, channel_axis=channel_axis, rgb=rgb)

    def raw(self, plane, n_samples, rng, callbacks):
        labels = np.rint(plane[0]).astype(np.int64)
        ids = np.unique(labels)
        shuffled = np.zeros(ids.max() + 1, dtype=np.int64)
        shuffled[ids[ids > 0]] = rng.permutation(ids[ids > 0].size) + 1
        return {"labels": np.stack([shuffled[labels]] * n_samples).astype(np.float32)}

    def instances(self, raw, settings, n_samples):
        samples = np.rint(raw["labels"][:n_samples]).astype(np.int32)
        return samples[0], samples


def test_stitched_windows_give_the_truth_back():
    _, truth = touching_blobs((100, 90), object_size=12, seed=4)
    result = segment_stitched(_TruthModel(truth), truth.astype(np.float32), window=40, overlap=30)
    assert result.n_windows == len(window_origins(truth.shape, 40, 30))
    assert f1_score(result.labels, truth) == 1.0


def test_window_settings_are_checked():
    with pytest.raises(InputError, match="overlap"):
        window_origins((100, 100), 32, 32)
    with pytest.raises(InputError, match="at least 16"):
        window_origins((100, 100), 8, 0)
    _, truth = touching_blobs((40, 40), object_size=10, seed=1)
    with pytest.raises(InputError, match="2-D"):
        segment_stitched(_TruthModel(truth), np.stack([truth, truth]).astype(np.float32), window=32, overlap=8)
