"""Speed and peak memory of ``probseg segment`` on large synthetic images.

Trains one small model per method on a 256 x 256 synthetic image (a few
hundred steps: accuracy does not matter here, only that the post-processing
sees objects of a plausible size), then segments synthetic images of
1024^2, 2048^2 and 4096^2 px through the real command line, each run in a
fresh process, and prints one table row per run:

* ``seconds``: wall time of the whole command (start-up, reading, network,
  post-processing, writing);
* ``MPix/s``: image megapixels over those seconds;
* ``peak RSS (MB)``: the child's maximum resident set size (``wait4``), so
  every row is one run's own peak.

Every run passes ``--samples N`` (default 8, the CLI's default). "labels"
runs ask for the labels only, for which the CLI draws one sample; "samples"
runs add ``--uncertainty-out`` and ``--probability-out``, which need all N.
The ``samples`` column is what was drawn, read from the labels' JSON
description. Run ``python benchmarks/large_image.py --help`` for the sizes
and the sample runs; the threads are the machine's unless
``OMP_NUM_THREADS`` is set. With ``PYTHONPATH`` pointing at another
checkout's ``src`` the same table measures that version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

METHODS = ("cellulus", "concrete-dropout")
OBJECT_SIZE = 20.0


def _prepare(work: Path, steps: int, sizes: list[int]) -> None:
    """Train the small models and write the images (run in a child process, see :func:`main`)."""
    from probseg import train
    from probseg.evaluation.synthetic import touching_blobs

    image, labels = touching_blobs((256, 256), object_size=OBJECT_SIZE, seed=0)
    for method in METHODS:
        if (work / "models" / method / "config.json").is_file():  # a rerun on the same --work
            continue
        config = {"object_size": OBJECT_SIZE} if method == "cellulus" else {}
        train(method, image, labels if method == "concrete-dropout" else None, config=config, steps=steps,
              device="cpu", out=work / "models" / method)
    for side in sizes:
        path = work / f"image_{side}.npy"
        if not path.exists():
            np.save(path, touching_blobs((side, side), object_size=OBJECT_SIZE, seed=1)[0].astype(np.float32))


def _run_measured(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (this child only) and stdout of one child process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"command failed ({child.returncode}): {' '.join(command)}\n{err.read().strip()}")
        # ru_maxrss is in KiB on Linux, bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        return seconds, usage.ru_maxrss * scale / 2**20, out.read()


def _objects(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("wrote ") and " objects to " in line:
            return line.split()[1]
    return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="image sides (default: 1024 2048 4096)")
    parser.add_argument("--samples", type=int, default=8, help="samples of the 'samples' runs (default: 8)")
    parser.add_argument("--samples-sizes", type=int, nargs="*", default=[1024, 2048, 4096],
                        help="sides that also get a 'samples' run (default: 1024 2048 4096; none: only labels runs)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=200, help="training steps of the small models (default: 200)")
    parser.add_argument("--work", type=Path, help="folder for models, images and outputs (default: a temporary one)")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare_only:
        _prepare(args.work, args.steps, args.sizes)
        return 0

    env = dict(os.environ)
    threads = env.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)
    env["OMP_NUM_THREADS"] = threads
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}, torch {version('torch')}, "
          f"probseg {version('napari-probseg')}, python {platform.python_version()}, device cpu, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Training and image making run in a child too: Linux counts the
        # parent's resident memory at fork into every child's peak RSS, so
        # this process must stay small (it never imports torch).
        _run_measured([sys.executable, __file__, "--prepare-only", "--work", str(work), "--steps", str(args.steps),
                       "--sizes", *map(str, args.sizes)], env)
        models = {method: work / "models" / method for method in METHODS}
        print(f"# models: {args.steps} training steps each on a 256x256 synthetic image, object size {OBJECT_SIZE:g} px; "
              "seconds are the whole command, start-up (imports) included")
        peaks: dict = {}
        header = f"{'side':>6} {'method':<17} {'outputs':<8} {'samples':>7} {'seconds':>8} {'MPix/s':>7} {'peak RSS (MB)':>13} {'objects':>7}"
        print(header)
        print("-" * len(header))
        for side in args.sizes:
            image = work / f"image_{side}.npy"
            for method in args.methods:
                runs = ["labels"] + (["samples"] if side in args.samples_sizes else [])
                for kind in runs:
                    out = work / f"out_{side}_{method}_{kind}"
                    shutil.rmtree(out, ignore_errors=True)  # a rerun on the same --work
                    command = [sys.executable, "-m", "probseg", "segment", str(models[method]), str(image),
                               "--out", str(out / "labels.tif"), "--device", "cpu", "--samples", str(args.samples)]
                    if kind == "samples":
                        command += ["--uncertainty-out", str(out / "uncertainty.tif"),
                                    "--probability-out", str(out / "probability.tif")]
                    seconds, rss, stdout = _run_measured(command, env)
                    mpix = side * side / 1e6
                    # What was drawn, as the labels' description records it.
                    drawn = json.loads((out / "labels.tif.json").read_text())["n_samples"]
                    print(f"{side:>6} {method:<17} {kind:<8} {drawn:>7} {seconds:>8.1f} {mpix / seconds:>7.3f} {rss:>13.0f} "
                          f"{_objects(stdout):>7}", flush=True)
                    peaks.setdefault((method, kind, drawn), []).append((side * side, rss))
        # How the peak grows with the image: the slope between the two
        # largest sizes, in bytes per pixel, and what is left at zero pixels.
        print("\npeak RSS growth between the two largest sizes of each kind of run:")
        for (method, kind, drawn), points in peaks.items():
            if len(points) >= 2:
                (pa, ra), (pb, rb) = sorted(points)[-2:]
                slope = (rb - ra) * 2**20 / (pb - pa)
                print(f"  {method:<17} {kind:<8} {drawn:>2} samples: {slope:6.0f} bytes/pixel + {ra - slope * pa / 2**20:5.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
