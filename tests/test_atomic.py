"""probseg.io.atomic: a written file is either old or new, and no temporary file is left."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from probseg.io import atomic


def _temporaries(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_replaces_and_fsyncs(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    assert atomic.write_bytes(target, b"new") == target
    assert target.read_bytes() == b"new"
    assert len(synced) == 2  # the file, then the folder
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("by_name", [False, True])
def test_failed_write_keeps_the_old_file(tmp_path, by_name):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def broken(handle_or_name):
        if by_name:
            with open(handle_or_name, "wb") as fh:
                fh.write(b"half")
        else:
            handle_or_name.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, broken, by_name=by_name)
    assert target.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []


def test_by_name_writer_gets_a_fresh_temporary_beside_the_target(tmp_path):
    seen = []

    def write(name):
        seen.append(name)
        name.write_bytes(b"x")

    atomic.atomic_write(tmp_path / "w.safetensors", write, by_name=True)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".w.safetensors.") and seen[0].suffix == ".tmp"
    assert (tmp_path / "w.safetensors").read_bytes() == b"x"


def test_write_json_and_npy(tmp_path):
    atomic.write_json(tmp_path / "d.json", {"a": [1, 2]})
    text = (tmp_path / "d.json").read_text()
    assert text.endswith("\n") and json.loads(text) == {"a": [1, 2]}
    with pytest.raises(ValueError):
        atomic.write_json(tmp_path / "nan.json", {"a": float("nan")})
    assert not (tmp_path / "nan.json").exists() and _temporaries(tmp_path) == []

    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    atomic.write_npy(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)


def test_temporary_names_are_unique(tmp_path):
    names = set()
    for _ in range(20):
        fd, tmp = atomic.create_temporary(tmp_path / "x")
        os.close(fd)
        names.add(tmp)
    assert len(names) == 20
