"""Files read back are verified (issue 20, "verify what is read"): raw stores, model folders, settings files.

Each file kind is damaged the ways the hostile trial found (a 1-D array in
place of the embeddings, deleted chunks, arrays and planes, integer and
boolean maps, NaN, a SPOCO store without its foreground, impossible sample
counts, malformed attributes, another model's weights, format version 0,
config fields missing, another method's settings, a settings folder). Through
the command line each ends with one ``probseg: error:`` line naming the file
and what is wrong, and every file in the folder stays byte-identical; through
the Python API each raises one error of the project's type naming the path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from safetensors.numpy import load_file, save_file

import probseg
from probseg.core.errors import CheckpointError, InputError
from probseg.engine import api
from probseg.engine.rawread import open_raw
from probseg.evaluation.synthetic import touching_blobs
from probseg.io.rawstore import load_raw, save_raw
from test_cli_bad_input import _problems, _run, _run_many, _snapshot

SEG = "img.tif --out new.tif --samples 1"
# (case id, command line, words the one line of stderr must contain)
CASES = [
    # -- raw stores: probseg instances ------------------------------------------------------
    ("raw-1d-embeddings", "instances r_1d.zarr --out new.tif", "plane_0000/embeddings has shape (1000,)"),
    ("raw-deleted-chunk", "instances r_chunk.zarr --out new.tif", "plane_0000/embeddings lacks 1 of its"),
    ("raw-int-embeddings", "instances r_int.zarr --out new.tif", "embeddings is int32, expected float32"),
    ("raw-bool-embeddings", "instances r_bool.zarr --out new.tif", "embeddings is bool, expected float32"),
    ("raw-nan", "instances r_nan.zarr --out new.tif", "plane_0000/embeddings holds NaN values"),
    ("raw-inf", "instances r_inf.zarr --out new.tif", "plane_0000/intensity holds infinite values"),
    ("raw-spoco-no-foreground", "instances s_nofg.zarr --out new.tif", "lacks the map 'foreground'"),
    ("raw-spoco-no-foreground-listed", "instances s_nofg_listed.zarr --out new.tif", "plane_0000/foreground is missing"),
    ("raw-spoco-draws-disagree", "instances s_draws.zarr --out new.tif", "holds 4 draws but foreground 2"),
    ("raw-spoco-learned-malformed", "instances s_learned.zarr --out new.tif", "model configuration spoco cannot use"),
    ("raw-samples-zero", "instances r_n0.zarr --out new.tif", "n_samples is 0"),
    ("raw-samples-negative", "instances r_nneg.zarr --out new.tif", "n_samples is -3"),
    ("raw-samples-text", "instances r_ntext.zarr --out new.tif", "n_samples is '3'"),
    ("raw-samples-fraction", "instances r_nfrac.zarr --out new.tif", "n_samples is 2.5"),
    ("raw-samples-huge", "instances r_nhuge.zarr --out new.tif", "n_samples is 100000000000"),
    ("raw-samples-mismatch", "instances r_nmis.zarr --out new.tif", "holds 4 draws; n_samples 5 means 6"),
    ("raw-deleted-array", "instances r_noarray.zarr --out new.tif", "plane_0000/intensity is missing"),
    ("raw-deleted-plane", "instances r_noplane.zarr --out new.tif", "plane_0000 is missing"),
    ("raw-extra-plane", "instances r_twoplanes.zarr --out new.tif", "holds 2 planes, expected 1"),
    ("raw-stray-group", "instances r_stray.zarr --out new.tif", "group 'extra' that is not a plane"),
    ("raw-stray-array", "instances r_strayarray.zarr --out new.tif", "holds 'junk', which its maps do not list"),
    ("raw-format-version-0", "instances r_v0.zarr --out new.tif", "format_version is 0"),
    ("raw-format-version-text", "instances r_vtext.zarr --out new.tif", "format_version is '1'"),
    ("raw-format-version-future", "instances r_v99.zarr --out new.tif", "raw format version 99; update probseg"),
    ("raw-no-format", "instances r_noformat.zarr --out new.tif", "is not a probseg raw store"),
    ("raw-unknown-method", "instances r_method.zarr --out new.tif", "method 'nosuch', which this probseg does not know"),
    ("raw-method-not-text", "instances r_method_num.zarr --out new.tif", "its method is 7"),
    ("raw-model-not-object", "instances r_model.zarr --out new.tif", "lacks the model's configuration"),
    ("raw-model-other-method", "instances r_model_method.zarr --out new.tif", "is a 'spoco' model but the store says 'cellulus'"),
    ("raw-model-config-missing-key", "instances r_cfgkey.zarr --out new.tif", "config lacks object_size"),
    ("raw-model-config-bad-value", "instances r_cfgval.zarr --out new.tif", "object_size must be at least"),
    ("raw-maps-not-a-list", "instances r_maps.zarr --out new.tif", "its list of maps is 'embeddings'"),
    ("raw-maps-duplicated", "instances r_mapsdup.zarr --out new.tif", "its list of maps is"),
    ("raw-is-stack-text", "instances r_stack.zarr --out new.tif", "its is_stack is 'no'"),
    ("raw-run-not-object", "instances r_run.zarr --out new.tif", "its run facts are not an object"),
    ("raw-notice-not-text", "instances r_notice.zarr --out new.tif", "its notice is not text"),
    ("raw-planes-zero", "instances r_planes.zarr --out new.tif", "its plane count is 0"),
    ("raw-plane-shape-differs", "instances r_yx.zarr --out new.tif", "not the plane's (32, 32)"),
    ("raw-root-meta-not-json", "instances r_rootjson.zarr --out new.tif", "is not a readable zarr store"),
    ("raw-chunk-garbage", "instances r_garbage.zarr --out new.tif", "plane_0000/embeddings cannot be read"),
    ("raw-is-a-file", "instances r_file.zarr --out new.tif", "is a file; a raw store is a folder"),
    ("raw-plane-meta-not-json", "instances r_planejson.zarr --out new.tif", "is not a readable zarr store"),
    ("raw-plane-meta-deleted", "instances r_planemeta.zarr --out new.tif", "plane_0000 is missing"),
    ("raw-array-meta-not-json", "instances r_arrayjson.zarr --out new.tif", "plane_0000 cannot be read"),
    ("raw-array-meta-deleted", "instances r_arraymeta.zarr --out new.tif", "plane_0000/embeddings is missing"),
    ("raw-model-settings-not-object", "instances r_settings.zarr --out new.tif", "settings must be a Settings"),
    ("raw-model-settings-bad-value", "instances r_settingsval.zarr --out new.tif", "min_size must be at least 0"),
    ("raw-model-channels-text", "instances r_channels.zarr --out new.tif", "cellulus cannot use"),
    # -- model folders: probseg segment -----------------------------------------------------
    ("model-other-weights", f"segment m_weights {SEG}", "weights.safetensors is not the one config.json records"),
    ("model-sha-malformed", f"segment m_sha {SEG}", "record.weights_sha256 must be a sha256"),
    ("model-record-not-object", f"segment m_record {SEG}", "record must be an object"),
    ("model-format-version-0", f"segment m_v0 {SEG}", "format version 0, which no probseg writes"),
    ("model-format-version-true", f"segment m_vtrue {SEG}", "format version True"),
    ("model-config-missing-key", f"segment m_cfgkey {SEG}", "config.json: config lacks object_size"),
    ("model-config-all-missing", f"segment m_cfgempty {SEG}", "config lacks steps"),
    ("model-config-not-object", f"segment m_cfglist {SEG}", "config must be an object, got list"),
    ("model-in-channels-missing", f"segment m_nochannels {SEG}", "lacks the field 'in_channels'"),
    ("model-in-channels-text", f"segment m_channels_text {SEG}", "in_channels must be a whole number"),
    ("model-normalization-not-object", f"segment m_norm {SEG}", "normalization must be an object"),
    ("model-method-not-text", f"segment m_method {SEG}", "method must be a method name"),
    # -- settings.json ----------------------------------------------------------------------
    ("settings-other-method", f"segment m_set_spoco {SEG}", "holds settings for method 'spoco', not for this 'cellulus'"),
    ("settings-no-method", f"segment m_set_nomethod {SEG}", "holds settings for method None"),
    ("settings-is-folder", f"segment m_set_folder {SEG}", "settings.json is a folder"),
    ("settings-not-object", f"segment m_set_list {SEG}", "no \"settings\" object"),
    ("settings-value-text", f"segment m_set_text {SEG}", "min_size must be a whole number"),
    ("settings-unknown-key", f"segment m_set_unknown {SEG}", "unknown setting(s) no_such"),
]


# -- building the damaged files ------------------------------------------------------------


def _copy(root: Path, src: str, dst: str) -> Path:
    shutil.copytree(root / src, root / dst)
    return root / dst


def _attrs(store: Path, change) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    change(meta["attributes"])
    (store / "zarr.json").write_text(json.dumps(meta))


def _replace_array(store: Path, name: str, data, plane: str = "plane_0000") -> None:
    group = zarr.open_group(str(store / plane), mode="r+")
    del group[name]
    out = group.create_array(name, shape=data.shape, dtype=data.dtype, fill_value=None if data.dtype == bool else 0)
    out[...] = data


def _config(folder: Path, change) -> None:
    meta = json.loads((folder / "config.json").read_text())
    change(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def _raw_stores(root: Path) -> None:
    r = root / "raw.zarr"
    emb = zarr.open_array(str(r / "plane_0000" / "embeddings"), mode="r")[...]
    _replace_array(_copy(root, "raw.zarr", "r_1d.zarr"), "embeddings", np.arange(1000, dtype=np.float32))
    chunk = next(p for p in (_copy(root, "raw.zarr", "r_chunk.zarr") / "plane_0000" / "embeddings").rglob("*")
                 if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    _replace_array(_copy(root, "raw.zarr", "r_int.zarr"), "embeddings", (emb * 100).astype(np.int32))
    _replace_array(_copy(root, "raw.zarr", "r_bool.zarr"), "embeddings", emb > 0)
    nan = emb.copy()
    nan[0, 0, 3, 3] = np.nan
    _replace_array(_copy(root, "raw.zarr", "r_nan.zarr"), "embeddings", nan)
    inf = zarr.open_array(str(r / "plane_0000" / "intensity"), mode="r")[...]
    inf[5, 5] = np.inf
    _replace_array(_copy(root, "raw.zarr", "r_inf.zarr"), "intensity", inf)
    for name, value in (("r_n0", 0), ("r_nneg", -3), ("r_ntext", "3"), ("r_nfrac", 2.5), ("r_nhuge", 10**11),
                        ("r_nmis", 5)):
        _attrs(_copy(root, "raw.zarr", f"{name}.zarr"), lambda a, v=value: a.update(n_samples=v))
    shutil.rmtree(_copy(root, "raw.zarr", "r_noarray.zarr") / "plane_0000" / "intensity")
    shutil.rmtree(_copy(root, "raw.zarr", "r_noplane.zarr") / "plane_0000")
    shutil.copytree(r / "plane_0000", _copy(root, "raw.zarr", "r_twoplanes.zarr") / "plane_0001")
    shutil.copytree(r / "plane_0000", _copy(root, "raw.zarr", "r_stray.zarr") / "extra")
    group = zarr.open_group(str(_copy(root, "raw.zarr", "r_strayarray.zarr") / "plane_0000"), mode="r+")
    group.create_array("junk", shape=(64, 64), dtype="float32")[...] = 1.0
    edits = {
        "r_v0": lambda a: a.update(format_version=0), "r_vtext": lambda a: a.update(format_version="1"),
        "r_v99": lambda a: a.update(format_version=99), "r_noformat": lambda a: a.pop("format"),
        "r_method": lambda a: (a.update(method="nosuch"), a["model"].update(method="nosuch")),
        "r_method_num": lambda a: a.update(method=7), "r_model": lambda a: a.update(model="cellulus"),
        "r_model_method": lambda a: a["model"].update(method="spoco"),
        "r_cfgkey": lambda a: a["model"]["config"].pop("object_size"),
        "r_cfgval": lambda a: a["model"]["config"].update(object_size=-1.0),
        "r_maps": lambda a: a.update(maps="embeddings"), "r_mapsdup": lambda a: a.update(maps=["embeddings"] * 2),
        "r_stack": lambda a: a.update(is_stack="no"), "r_run": lambda a: a.update(run=[1, 2]),
        "r_notice": lambda a: a.update(notice={"text": 1}), "r_planes": lambda a: a.update(planes=0),
    }
    for name, change in edits.items():
        _attrs(_copy(root, "raw.zarr", f"{name}.zarr"), change)
    small = _copy(root, "raw.zarr", "r_yx.zarr")
    _replace_array(small, "intensity", np.zeros((32, 32), np.float32))
    (_copy(root, "raw.zarr", "r_rootjson.zarr") / "zarr.json").write_text("{not json")
    garbage = next(p for p in (_copy(root, "raw.zarr", "r_garbage.zarr") / "plane_0000" / "embeddings").rglob("*")
                   if p.is_file() and p.name != "zarr.json")
    garbage.write_bytes(b"\x00garbage" * 50)
    (root / "r_file.zarr").write_bytes(b"not a store")
    (_copy(root, "raw.zarr", "r_planejson.zarr") / "plane_0000" / "zarr.json").write_text("{bad")
    (_copy(root, "raw.zarr", "r_planemeta.zarr") / "plane_0000" / "zarr.json").unlink()
    (_copy(root, "raw.zarr", "r_arrayjson.zarr") / "plane_0000" / "embeddings" / "zarr.json").write_text("{bad")
    (_copy(root, "raw.zarr", "r_arraymeta.zarr") / "plane_0000" / "embeddings" / "zarr.json").unlink()
    _attrs(_copy(root, "raw.zarr", "r_settings.zarr"), lambda a: a["model"].update(settings="x"))
    _attrs(_copy(root, "raw.zarr", "r_settingsval.zarr"), lambda a: a["model"].update(settings={"min_size": -5}))
    _attrs(_copy(root, "raw.zarr", "r_channels.zarr"), lambda a: a["model"].update(in_channels="abc"))
    # SPOCO, whose foreground map is needed once the model learned a foreground head.
    s = root / "spoco.zarr"
    shutil.rmtree(_copy(root, "spoco.zarr", "s_nofg.zarr") / "plane_0000" / "foreground")
    _attrs(root / "s_nofg.zarr", lambda a: a.update(maps=["embeddings"]))
    shutil.rmtree(_copy(root, "spoco.zarr", "s_nofg_listed.zarr") / "plane_0000" / "foreground")
    fg = zarr.open_array(str(s / "plane_0000" / "foreground"), mode="r")[...]
    _replace_array(_copy(root, "spoco.zarr", "s_draws.zarr"), "foreground", fg[:2])
    _attrs(_copy(root, "spoco.zarr", "s_learned.zarr"), lambda a: a["model"]["learned"].update(foreground_kind="x"))


def _model_folders(root: Path) -> None:
    m = root / "model"
    shutil.copytree(m, root / "m_weights")
    shutil.copy(root / "model2" / "weights.safetensors", root / "m_weights" / "weights.safetensors")
    edits = {
        "m_sha": lambda c: c["record"].update(weights_sha256="abc"), "m_record": lambda c: c.update(record="x"),
        "m_v0": lambda c: c.update(format_version=0), "m_vtrue": lambda c: c.update(format_version=True),
        "m_cfgkey": lambda c: c["config"].pop("object_size"), "m_cfgempty": lambda c: c.update(config={}),
        "m_cfglist": lambda c: c.update(config=[]), "m_nochannels": lambda c: c.pop("in_channels"),
        "m_channels_text": lambda c: c.update(in_channels="1"), "m_norm": lambda c: c.update(normalization=[1, 99]),
        "m_method": lambda c: c.update(method=3),
    }
    for name, change in edits.items():
        _config(_copy(root, "model", name), change)
    settings = {
        "m_set_spoco": {"method": "spoco", "settings": {"min_size": 3}},
        "m_set_nomethod": {"settings": {"min_size": 3}},
        "m_set_list": [1, 2],
        "m_set_text": {"method": "cellulus", "settings": {"min_size": "big"}},
        "m_set_unknown": {"method": "cellulus", "settings": {"no_such": 1}},
    }
    for name, data in settings.items():
        (_copy(root, "model", name) / "settings.json").write_text(json.dumps(data))
    (_copy(root, "model", "m_set_folder") / "settings.json").mkdir()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_reads")
    image, labels = touching_blobs(shape=(64, 64), object_size=12, seed=0)
    tifffile.imwrite(root / "img.tif", image.astype(np.float32))
    model = api.train("cellulus", image, config={"object_size": 12.0}, steps=1, out=root / "model", device="cpu")
    api.train("cellulus", image, config={"object_size": 12.0}, steps=1, out=root / "model2", device="cpu", seed=1)
    save_raw(root / "raw.zarr", model.predict(image, 3).raw, model.meta())
    spoco = api.train("spoco", image, labels, config=dict(num_fmaps=4, embedding_dims=8, crop_size=48, batch_size=2),
                      steps=1, device="cpu")
    assert "foreground" in spoco.raw_maps
    save_raw(root / "spoco.zarr", spoco.predict(image, 3).raw, spoco.meta())
    _raw_stores(root)
    _model_folders(root)
    return root


# -- the command line ----------------------------------------------------------------------


def test_the_table_holds_every_case_once():
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)) and len(names) >= 40


def test_every_damaged_file_fails_in_one_line_and_touches_nothing(workdir):
    before = _snapshot(workdir)
    results = _run_many(workdir, [command for _, command, _ in CASES])
    failures = _problems(CASES, results)
    assert not failures, "\n".join(failures)
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("name", ["raw-1d-embeddings", "model-other-weights", "settings-other-method"])
def test_the_entry_point_itself_refuses(workdir, name):
    case = next(c for c in CASES if c[0] == name)
    before = _snapshot(workdir)
    result = _run(workdir, case[1])
    assert not _problems([case], [{"rc": result.returncode, "stderr": result.stderr}])
    assert _snapshot(workdir) == before


def test_the_healthy_files_still_work(workdir, tmp_path):
    for what in ("raw.zarr", "spoco.zarr", "model"):
        shutil.copytree(workdir / what, tmp_path / what)
    shutil.copy(workdir / "img.tif", tmp_path / "img.tif")
    for command in ("instances raw.zarr --out a.tif", "instances spoco.zarr --out b.tif",
                    "segment model img.tif --out c.tif --samples 1"):
        result = _run(tmp_path, command)
        assert result.returncode == 0, result.stderr


# -- the Python API ------------------------------------------------------------------------

RAW_API = [
    ("r_1d.zarr", "has shape (1000,)"), ("r_chunk.zarr", "lacks 1 of its"), ("r_int.zarr", "int32, expected float32"),
    ("r_bool.zarr", "bool, expected float32"), ("r_inf.zarr", "infinite"), ("r_nmis.zarr", "n_samples 5 means 6"),
    ("r_noarray.zarr", "intensity is missing"), ("r_v0.zarr", "format_version is 0"),
    ("r_model.zarr", "model's configuration"), ("missing.zarr", "does not exist"),
]


@pytest.mark.parametrize("name, words", RAW_API, ids=[c[0] for c in RAW_API])
def test_load_raw_refuses(workdir, name, words):
    with pytest.raises(InputError, match=None) as info:
        load_raw(workdir / name)
    assert words in str(info.value) and name in str(info.value)


OPEN_API = [("s_nofg.zarr", "lacks the map 'foreground'"), ("r_method.zarr", "'nosuch'"),
            ("r_cfgkey.zarr", "config lacks object_size"), ("r_yx.zarr", "not the plane's"),
            ("s_learned.zarr", "spoco cannot use"), ("r_nan.zarr", "embeddings holds NaN values")]


@pytest.mark.parametrize("name, words", OPEN_API, ids=[c[0] for c in OPEN_API])
def test_open_raw_refuses_what_the_method_cannot_use(workdir, name, words):
    with pytest.raises(InputError) as info:
        open_raw(workdir / name)
    assert words in str(info.value) and name in str(info.value)


def test_nan_is_accepted_in_the_maps_a_method_declares(workdir, monkeypatch):
    # InpaintAff's affinities are NaN where no patch held the pair; its nan_maps says so.
    cls = probseg.methods.get("cellulus").model_class
    monkeypatch.setattr(cls, "nan_maps", ("embeddings",))
    raw, _ = open_raw(workdir / "r_nan.zarr")
    assert np.isnan(raw.planes[0]["embeddings"]).sum() == 1


def test_open_raw_blames_the_user_for_bad_settings_not_the_store(workdir):
    with pytest.raises(InputError) as info:
        open_raw(workdir / "raw.zarr", {"min_size": -1})
    assert "raw.zarr" not in str(info.value) and "min_size" in str(info.value)


def test_the_napari_reader_refuses_a_damaged_store(workdir):
    from napari_probseg._reader import read_raw

    with pytest.raises(InputError, match="lacks the map 'foreground'"):
        read_raw(str(workdir / "s_nofg.zarr"))


MODEL_API = [
    ("m_weights", "is not the one config.json records"), ("m_v0", "format version 0"),
    ("m_cfgkey", "config lacks object_size"), ("m_nochannels", "'in_channels'"),
    ("m_set_spoco", "settings for method 'spoco'"), ("m_set_folder", "is a folder"),
]


@pytest.mark.parametrize("name, words", MODEL_API, ids=[c[0] for c in MODEL_API])
def test_load_model_refuses(workdir, name, words):
    with pytest.raises(CheckpointError) as info:
        probseg.load_model(workdir / name, device="cpu")
    assert words in str(info.value) and name in str(info.value)


def test_a_model_without_a_weights_record_loads_unchecked(workdir, tmp_path):
    # Folders written without a record (by hand, or by older releases) have nothing to check against.
    folder = shutil.copytree(workdir / "m_weights", tmp_path / "old")
    _config(folder, lambda c: c.pop("record"))
    assert probseg.load_model(folder, device="cpu").record == {}


def test_weights_edited_in_place_are_refused(workdir, tmp_path):
    folder = shutil.copytree(workdir / "model", tmp_path / "edited")
    weights = load_file(folder / "weights.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + np.float32(1e-3)
    save_file(weights, folder / "weights.safetensors")
    with pytest.raises(CheckpointError, match="is not the one config.json records"):
        probseg.load_model(folder, device="cpu")


def test_every_chunk_is_stored_so_a_deleted_one_is_noticed(workdir, tmp_path):
    # Zarr skips chunks equal to the fill value; an all-zero mask must still be on disk.
    raw, meta = load_raw(workdir / "raw.zarr")
    raw.planes[0]["mask"] = np.zeros((64, 64), np.float32)
    store = save_raw(tmp_path / "masked.zarr", raw, meta)
    assert np.array_equal(load_raw(store)[0].planes[0]["mask"], raw.planes[0]["mask"])
    chunks = [p for p in (store / "plane_0000" / "mask").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    chunks[0].unlink()
    with pytest.raises(InputError, match="plane_0000/mask lacks 1 of its 1 chunks"):
        load_raw(store)


# -- proofreading session files ------------------------------------------------------------


def _session(tmp_path):
    from probseg.proofreading.edits import delete, merge
    from probseg.proofreading.session import Session

    labels = np.zeros((40, 40), np.int32)
    labels[4:16, 4:30], labels[20:34, 6:14], labels[22:30, 20:34] = 1, 2, 3
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    path = tmp_path / "cells.npy"
    np.save(path, image)
    session = Session.open(path, image, labels)
    session.apply(merge(session.labels, 1, 2))
    session.apply(delete(session.labels, 3))
    folder = session.folder
    session.close()
    return path, image, folder


def _edit_json(folder: Path, name: str, change) -> None:
    data = json.loads((folder / name).read_text())
    change(data)
    (folder / name).write_text(json.dumps(data))


SESSION_CASES = [
    ("version-0", "session.json", lambda d: d.update(format_version=0), "format version 0, which no probseg writes"),
    ("version-true", "session.json", lambda d: d.update(format_version=True), "format version True"),
    ("version-text", "session.json", lambda d: d.update(format_version="1"), "format version '1'"),
    ("version-future", "session.json", lambda d: d.update(format_version=9), "newer probseg"),
    ("pixels-negative", "edits.json", lambda d: d[0].update(pixels=-5), "entry 1 is damaged"),
    ("pixels-bool", "edits.json", lambda d: d[0].update(pixels=True), "entry 1 is damaged"),
]


@pytest.mark.parametrize("case", SESSION_CASES, ids=[c[0] for c in SESSION_CASES])
def test_damaged_session_files_are_refused_and_left_untouched(tmp_path, case):
    from probseg.proofreading.errors import SessionError
    from probseg.proofreading.session import Session

    _, name, change, words = case
    path, image, folder = _session(tmp_path)
    _edit_json(folder, name, change)
    before = _snapshot(folder)
    with pytest.raises(SessionError) as info:
        Session.open(path, image)
    assert words in str(info.value) and str(folder) in str(info.value) and "\n" not in str(info.value)
    assert _snapshot(folder) == before


def test_an_edit_file_holding_fractions_is_refused_on_undo(tmp_path):
    from probseg.proofreading.errors import SessionError
    from probseg.proofreading.session import Session

    path, image, folder = _session(tmp_path)
    edit = folder / "edits" / "000002.npz"
    with np.load(edit) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["before"] = arrays["before"].astype(np.float64) + 0.5
    np.savez_compressed(edit, **arrays)
    session = Session.open(path, image)
    try:
        with pytest.raises(SessionError, match="before values are float64, not integers"):
            session.undo()
    finally:
        session.close()
