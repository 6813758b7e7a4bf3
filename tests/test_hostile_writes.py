"""Nothing lost (issue 20): outputs replaced only after success, locked while written, never read half-saved.

The table holds the writes the hostile trial found lost or mixed up: a second
writer of an output or model folder (each refused in one line naming the
holder) and runs with ``--overwrite`` that fail after they started; each case
exits non-zero with exactly one ``probseg: error:`` line and leaves every file
in the folder byte-identical. The tests after it run real concurrent
processes: two writers of one output (one is paused with SIGSTOP while it
holds its lock, so the overlap does not depend on timing), a reader loading a
model folder thousands of times while another process saves it, and Ctrl-C
after ``--overwrite`` started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from probseg.core.errors import CheckpointError
from probseg.engine import api
from probseg.evaluation.synthetic import perturbed_samples, touching_blobs
from probseg.io import atomic
from probseg.io.lock import LockHeld, hold, lock_file_of
from test_cli_bad_input import _problems, _run_many, _snapshot

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"object_size": 12.0, "num_fmaps": 4, "fmap_inc_factor": 1}

# (case id, command line, words the one line of stderr must contain). Paths
# named locked* are held by the test process (a live process other than the
# one running the cases) while the table runs; other-host* by another machine.
CASES = [
    ("second-writer-out", "segment model img.tif --out locked.tif", "--out locked.tif is being written by process"),
    ("second-writer-out-overwrite", "segment model img.tif --out locked_old.tif --overwrite", "is being written by process"),
    ("second-writer-out-names-host", "segment model img.tif --out locked.tif", f"on {socket.gethostname()} since"),
    ("second-writer-out-other-spelling", "segment model img.tif --out sub/../locked.tif", "is being written by process"),
    ("second-writer-samples-out", "segment model img.tif --out new.tif --samples-out locked.tif", "--samples-out locked.tif"),
    ("second-writer-uncertainty-out", "segment model img.tif --out new.tif --uncertainty-out locked.tif", "--uncertainty-out"),
    ("second-writer-embeddings-out", "segment model img.tif --out new.tif --embeddings-out locked.tif", "--embeddings-out"),
    ("second-writer-probability-out", "segment model img.tif --out new.tif --probability-out locked.tif", "--probability-out"),
    ("second-writer-raw-out", "segment model img.tif --out new.tif --raw-out locked_raw.zarr --overwrite", "--raw-out locked_raw.zarr"),
    ("second-writer-zarr-out", "segment model img.tif --out locked.zarr", "--out locked.zarr is being written"),
    ("second-writer-new-folder", "segment model img.tif --out lockeddir/new.tif", "--out lockeddir/new.tif is being written"),
    ("second-writer-instances", "instances raw.zarr --out locked.tif", "--out locked.tif is being written"),
    ("second-writer-instances-samples", "instances raw.zarr --out new.tif --samples-out locked.tif", "--samples-out"),
    ("second-writer-consensus", "consensus samples.tif --out locked.tif", "--out locked.tif is being written"),
    ("second-writer-consensus-sweep", "consensus samples.tif --out c.tif --resolution auto --sweep-out locked.csv", "--sweep-out"),
    ("second-writer-train", "train cellulus img.tif --out locked_model --steps 1 --object-size 12 --overwrite", "--out locked_model is being written"),
    ("second-writer-train-names-host", "train cellulus img.tif --out locked_model --steps 1 --overwrite", f"on {socket.gethostname()} since"),
    ("second-writer-train-new-folder", "train cellulus img.tif --out locked_new_model --steps 1 --object-size 12", "is being written"),
    ("other-host-holds-out", "segment model img.tif --out other_host.tif --overwrite", "on other-machine.example"),
    ("other-host-says-delete", "segment model img.tif --out other_host.tif --overwrite", "delete"),
    ("other-host-holds-model", "train cellulus img.tif --out other_host_model --steps 1 --object-size 12 --overwrite", "on other-machine.example"),
    # Runs with --overwrite that fail after the work began: the old outputs stay.
    ("overwrite-bad-mask-keeps-raw", "segment model img.tif --out existing.tif --raw-out raw.zarr --foreground-mask small.tif --overwrite", "small.tif"),
    ("overwrite-features-not-made", "instances raw.zarr --out existing.tif --features-out existing.csv --overwrite", "no object features"),
    ("overwrite-instances-bad-mask", "instances raw.zarr --out existing.tif --foreground-mask small.tif --overwrite", "small.tif"),
    ("overwrite-consensus-bad-region", "consensus samples.tif --out existing.tif --region 0,0,500,500 --overwrite", "beyond"),
    ("overwrite-train-bad-images", "train cellulus one.tif --out model --steps 1 --overwrite", "too small"),
]

# Runs with --overwrite that fail once the network started (the case 1): a notice of the start may
# come first, then the one error line; every old output stays byte-identical.
STARTED = [
    ("overwrite-wrong-channels-keeps-raw-and-labels",
     "segment model rgb.tif --rgb --out existing.tif --raw-out raw.zarr --samples 2 --overwrite", "this image has 3"),
    ("overwrite-wrong-channels-keeps-samples",
     "segment model rgb.tif --rgb --out existing.tif --samples-out existing_samples.tif --overwrite", "this image has 3"),
    ("overwrite-wrong-channels-zarr", "segment model rgb.tif --rgb --out existing.zarr --overwrite", "this image has 3"),
]


def _train(folder: Path, image) -> None:
    api.train("cellulus", image, config=dict(TINY), steps=1, out=folder)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_writes")
    image, labels = touching_blobs(shape=(64, 64), object_size=12, seed=0)
    tifffile.imwrite(root / "img.tif", image.astype(np.float32))
    tifffile.imwrite(root / "rgb.tif", np.stack([image] * 3, axis=-1).astype(np.float32))
    tifffile.imwrite(root / "one.tif", np.zeros((1, 1), np.float32))
    tifffile.imwrite(root / "small.tif", np.ones((8, 8), np.uint8))
    tifffile.imwrite(root / "samples.tif", perturbed_samples(labels, 3, seed=0).astype(np.uint16), photometric="minisblack")
    for name in ("existing.tif", "existing_samples.tif", "locked_old.tif"):
        tifffile.imwrite(root / name, labels.astype(np.uint16))
    (root / "existing.csv").write_text("label\n1\n")
    (root / "other_host.tif").write_bytes(b"old")
    (root / "sub").mkdir()
    _train(root / "model", image)
    _train(root / "locked_model", image)
    _train(root / "other_host_model", image)
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    for command in ("segment model img.tif --out existing.zarr --samples 1",
                    "segment model img.tif --out first.tif --raw-out raw.zarr --samples 2",
                    "segment model img.tif --out first2.tif --raw-out locked_raw.zarr --samples 2"):
        done = subprocess.run([sys.executable, "-m", "probseg", *command.split()], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    holder = {"pid": 4242, "host": "other-machine.example", "since": "2024-01-01T00:00:00.000+00:00"}
    for name in ("other_host.tif", "other_host_model"):
        lock_file_of(root / name).write_text(json.dumps(holder))
    return root


def test_second_writers_and_failed_overwrites_fail_in_one_line_and_touch_nothing(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    names = ["locked.tif", "locked_old.tif", "locked_raw.zarr", "locked.zarr", "lockeddir/new.tif", "locked.csv",
             "locked_model", "locked_new_model"]
    holds = [hold(workdir / name) for name in names]
    for h in holds:
        h.__enter__()
    try:
        before = _snapshot(workdir)
        results = _run_many(workdir, [command for _, command, _ in CASES])
        failures = _problems(CASES, results)
        assert not failures, "\n".join(failures)
        assert _snapshot(workdir) == before
    finally:
        for h in reversed(holds):
            h.__exit__(None, None, None)
    # Released: the lock files are gone, and so is the folder made for one.
    assert not lock_file_of(workdir / "locked.tif").exists() and not (workdir / "lockeddir").exists()


def test_overwrite_runs_that_fail_after_the_start_keep_every_old_output(workdir):
    before = _snapshot(workdir)
    results = _run_many(workdir, [command for _, command, _ in STARTED])
    failures = []
    for (name, _, words), result in zip(STARTED, results):
        errors = [line for line in result["stderr"].splitlines() if line.startswith("probseg: error: ")]
        last = result["stderr"].strip().splitlines()[-1:]
        if result["rc"] == 0 or len(errors) != 1 or last != errors or words not in errors[0]:
            failures.append(f"{name}: {result['rc']} {result['stderr']!r}")
    assert not failures, "\n".join(failures)
    assert _snapshot(workdir) == before


# -- two writers at once -----------------------------------------------------------------------------

def _start(root: Path, command: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    env.pop("PROBSEG_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "probseg", *command.split()], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the lock file ``path`` exists and holds its holder's record (written just after the file is made)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert process.poll() is None, f"ended before taking its lock: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def _while_paused(root: Path, first: str, lock: Path, second: str):
    """Start ``first``, pause it (SIGSTOP) once it holds ``lock``, run ``second`` to its end, resume ``first``."""
    a = _start(root, first)
    try:
        _wait_for(lock, a)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            b = _start(root, second)
            b_out, b_err = b.communicate(timeout=300)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        a_out, a_err = a.communicate(timeout=300)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    return (a.returncode, a_err), (b.returncode, b_err), a.pid


def test_two_segment_runs_to_one_output_exactly_one_succeeds(workdir, tmp_path):
    for name in ("img.tif", "model"):
        (shutil.copytree if (workdir / name).is_dir() else shutil.copy)(workdir / name, tmp_path / name)
    command = "segment model img.tif --out labels.tif --samples 1 --overwrite"
    (a_rc, a_err), (b_rc, b_err), a_pid = _while_paused(tmp_path, command, lock_file_of(tmp_path / "labels.tif"), command)
    assert a_rc == 0, a_err
    lines = b_err.strip().splitlines()
    assert b_rc == 1 and len(lines) == 1 and lines[0].startswith("probseg: error: --out labels.tif is being written"), b_err
    assert f"process {a_pid} on {socket.gethostname()} since " in lines[0]
    assert (tmp_path / "labels.tif").is_file() and not lock_file_of(tmp_path / "labels.tif").exists()
    assert json.loads((tmp_path / "labels.tif.json").read_text())["objects"] > 0


def test_two_train_runs_into_one_folder_never_both_succeed(workdir, tmp_path):
    shutil.copy(workdir / "img.tif", tmp_path / "img.tif")
    command = "train cellulus img.tif --out model --steps 3 --object-size 12 --num-fmaps 4 --checkpoint-every 1 --overwrite"
    (a_rc, a_err), (b_rc, b_err), a_pid = _while_paused(tmp_path, command, lock_file_of(tmp_path / "model"), command)
    assert a_rc == 0, a_err
    lines = b_err.strip().splitlines()
    assert b_rc == 1 and len(lines) == 1 and f"--out model is being written by process {a_pid}" in lines[0], b_err
    model = api.load_model(tmp_path / "model", device="cpu")
    assert model.train_log["steps_done"] == 3 and not lock_file_of(tmp_path / "model").exists()


def test_model_save_into_a_folder_another_process_writes_is_refused(workdir, tmp_path):
    # The Python API: model.save takes the folder's lock; a train of another process holds it.
    shutil.copy(workdir / "img.tif", tmp_path / "img.tif")
    model = api.load_model(workdir / "model", device="cpu")
    command = "train cellulus img.tif --out model --steps 2 --object-size 12 --num-fmaps 4"
    a = _start(tmp_path, command)
    try:
        _wait_for(lock_file_of(tmp_path / "model"), a)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            with pytest.raises(LockHeld, match=rf"the model folder .*model is being written by process {a.pid} on "):
                model.save(tmp_path / "model")
        finally:
            os.kill(a.pid, signal.SIGCONT)
        assert a.wait(timeout=300) == 0, a.communicate()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


# -- loads during saves ------------------------------------------------------------------------------

_SAVER = r"""
import sys, time
from pathlib import Path
import torch
from probseg.engine.api import load_model

folder, stop = Path(sys.argv[1]), Path(sys.argv[2])
model = load_model(folder, device="cpu")
first = next(iter(model.net.parameters()))
i = 0
while not stop.exists():
    i += 1
    with torch.no_grad():
        first.fill_(float(i))  # each save's weights say which save they are
    model.train_log = {"save": i}
    model.save(folder)
print(i)
"""


def test_loads_during_saves_never_pair_files_of_two_saves(workdir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(workdir / "model", folder)
    stop = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    saver = subprocess.Popen([sys.executable, "-c", _SAVER, str(folder), str(stop)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loads, seen, start = 0, set(), time.monotonic()
    try:
        while True:
            model = api.load_model(folder, device="cpu")  # a healthy folder: must never fail
            save = model.train_log.get("save")
            value = float(next(iter(model.net.parameters())).flatten()[0])
            if save is not None:  # the copy made by train has no counter; every later save has one
                assert value == float(save), f"load {loads}: config.json of save {save}, weights of save {value:g}"
                seen.add(save)
                loads += 1
            if loads >= 2000 and len(seen) > 20:
                break
            assert time.monotonic() - start < 240, f"only {loads} loads and {len(seen)} saves"
    finally:
        stop.touch()
        out, err = saver.communicate(timeout=60)
    assert saver.returncode == 0, err
    assert int(out) >= len(seen) > 20  # the loads really met many saves


def test_a_mismatch_that_stays_is_one_line_naming_the_files(workdir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(workdir / "model", folder)
    other = api.train("cellulus", tifffile.imread(workdir / "img.tif"), config=dict(TINY), steps=1, seed=1)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "weights.safetensors", folder / "weights.safetensors")
    with pytest.raises(CheckpointError, match="weights.safetensors is not the one config.json records") as info:
        api.load_model(folder, device="cpu")
    assert "\n" not in str(info.value)


# -- Ctrl-C and failures after --overwrite started -----------------------------------------------------

def test_ctrl_c_after_overwrite_started_leaves_the_old_outputs(workdir, tmp_path):
    image = tifffile.imread(workdir / "img.tif")
    tifffile.imwrite(tmp_path / "big.tif", np.tile(image, (4, 4)))
    shutil.copytree(workdir / "model", tmp_path / "model")
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    command = "segment model big.tif --out labels.tif --raw-out raw.zarr --samples-out samples.tif --samples 8"
    first = subprocess.run([sys.executable, "-m", "probseg", *command.split()], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    before = _snapshot(tmp_path)
    run = _start(tmp_path, command + " --overwrite --seed 1")
    try:
        # The new store is being built beside the old one: the network runs.
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".raw.zarr.partial-") for p in tmp_path.iterdir()):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.005)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, err
    assert _snapshot(tmp_path) == before  # labels, sidecar, samples and every file of the store as they were


def test_replace_on_success_discards_every_prepared_write_on_failure(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    old_store = tmp_path / "store"
    old_store.mkdir()
    (old_store / "x").write_text("old x")
    with pytest.raises(RuntimeError):
        with atomic.replace_on_success():
            atomic.write_bytes(tmp_path / "a.txt", b"new a")
            new = atomic.hidden_sibling(old_store, "partial")
            new.mkdir()
            (new / "x").write_text("new x")
            atomic.replace_folder(new, old_store)
            atomic.remove_file(tmp_path / "a.txt")
            assert (tmp_path / "a.txt").read_text() == "old a"  # nothing applied yet
            raise RuntimeError("the run failed")
    assert (tmp_path / "a.txt").read_text() == "old a" and (old_store / "x").read_text() == "old x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "store"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_replace_folder_swaps_in_the_new_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "store"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic.replace_on_success():
        new = atomic.hidden_sibling(target, "partial")
        new.mkdir()
        (new / "new").write_text("new")
        atomic.replace_folder(new, target)
        atomic.write_bytes(tmp_path / "labels.txt", b"labels")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "store"]


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_file_of(tmp_path / "out.tif")
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "2024-01-01T00:00:00Z"}))
    with hold(tmp_path / "out.tif", "--out") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with hold(tmp_path / "out.tif", "--out"):  # this process again (model.save inside train): allowed
            pass
        assert path.exists()
    assert not lock.exists()


def test_a_model_folder_reached_through_a_link_shares_its_lock(tmp_path):
    (tmp_path / "store" / "m").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "store" / "m")
    assert lock_file_of(tmp_path / "link") == lock_file_of(tmp_path / "store" / "m")
    with hold(tmp_path / "store" / "m", "--out"):
        code = subprocess.run([sys.executable, "-c", f"from probseg.io.lock import hold\nwith hold({str(tmp_path / 'link')!r}):\n    pass"],
                              env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True, timeout=60)
    assert code.returncode != 0 and "is being written by" in code.stderr


@pytest.mark.parametrize("name", ["config.json", "weights.safetensors", "settings.json"])
def test_a_folder_where_a_model_file_goes_is_refused_before_training(workdir, tmp_path, name):
    (tmp_path / "m" / name).mkdir(parents=True)
    before = _snapshot(tmp_path)
    result = _run_many(workdir, [f"train cellulus img.tif --out {tmp_path / 'm'} --steps 2 --object-size 12 --overwrite"])[0]
    lines = result["stderr"].strip().splitlines()
    assert result["rc"] == 1 and len(lines) == 1 and "is a folder where the model's file goes" in lines[0], result
    assert _snapshot(tmp_path) == before


def test_a_nested_hold_survives_its_lock_file_being_deleted(tmp_path):
    with hold(tmp_path / "x.tif") as path:
        path.unlink()
        with hold(tmp_path / "x.tif"):
            pass
    assert not lock_file_of(tmp_path / "x.tif").exists()
