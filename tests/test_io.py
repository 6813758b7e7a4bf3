"""Reading and writing images: round trips, clear errors, atomic writes."""

import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from probseg.core.errors import InputError
from probseg.io.images import check_output_path, read_image, write_image


def _ramp(shape=(20, 24), dtype=np.uint16):
    return (np.arange(np.prod(shape)) % 250).reshape(shape).astype(dtype)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "name, array",
    [
        ("a.tif", _ramp()),
        ("a.tiff", _ramp((3, 20, 24), np.float32) / 7),
        ("a.TIF", _ramp(dtype=np.int32)),
        ("a.npy", _ramp((2, 20, 24), np.float64)),
        ("a.png", _ramp(dtype=np.uint8)),
        ("a.png", _ramp(dtype=np.uint16) * 200),
    ],
)
def test_round_trip(tmp_path, name, array):
    path = write_image(tmp_path / name, array)
    back = read_image(path)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert _leftovers(tmp_path) == []


def test_write_creates_folders_and_replaces(tmp_path):
    target = tmp_path / "deep" / "er" / "labels.tif"
    write_image(target, np.ones((16, 16), np.uint16))
    write_image(target, np.full((16, 16), 2, np.uint16))
    assert read_image(target).max() == 2
    assert _leftovers(target.parent) == []


def test_integer_tiff_is_compressed(tmp_path):
    path = write_image(tmp_path / "labels.tif", np.zeros((64, 64), np.uint32))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression.name in ("ADOBE_DEFLATE", "DEFLATE")


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "labels.tif"
    write_image(target, np.ones((16, 16), np.uint16))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError):
        write_image(target, np.full((16, 16), 5, np.uint16))
    assert read_image(target).max() == 1
    assert _leftovers(tmp_path) == []


def test_rgb_png_and_jpeg_keep_colour_axis(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    iio.imwrite(tmp_path / "c.png", rgb)
    iio.imwrite(tmp_path / "c.jpg", rgb)
    assert read_image(tmp_path / "c.png").shape == (20, 30, 3)
    jpeg = read_image(tmp_path / "c.jpg")
    assert jpeg.shape == (20, 30, 3)
    assert abs(int(jpeg[..., 0].mean()) - 200) < 10  # lossy, but close


def test_multipage_tiff_is_a_stack(tmp_path):
    stack = _ramp((4, 16, 16))
    tifffile.imwrite(tmp_path / "s.tif", stack)
    assert read_image(tmp_path / "s.tif").shape == (4, 16, 16)


def test_zarr_array_group_and_names(tmp_path):
    single = tmp_path / "single.zarr"
    zarr.save_array(str(single), _ramp())
    np.testing.assert_array_equal(read_image(single), _ramp())

    store = tmp_path / "plate.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_group("labels").create_array("nuclei", shape=(20, 24), dtype="int32")[...] = 7
    group.create_array("raw", shape=(20, 24), dtype="uint16")[...] = _ramp()
    group.create_array("zz", shape=(2, 2), dtype="uint8")[...] = 1
    # A group alone: the alphabetically first array of the top level.
    np.testing.assert_array_equal(read_image(store), _ramp())
    assert read_image(store, name="labels/nuclei").max() == 7
    assert read_image(store / "labels" / "nuclei").max() == 7
    assert read_image(store, name="labels").max() == 7  # a sub-group: its first array
    with pytest.raises(InputError, match="no array named 'missing'"):
        read_image(store, name="missing")


def test_zarr_format_2(tmp_path):
    path = tmp_path / "v2.zarr"
    zarr.save_array(str(path), _ramp(), zarr_format=2)
    np.testing.assert_array_equal(read_image(path), _ramp())


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("garbage.tif", b"this is not a tiff" * 8, "not a readable TIFF file"),
        ("garbage.png", b"\x89PNG but not really" * 8, "not a readable PNG file"),
        ("garbage.jpg", b"\xff\xd8 broken" * 8, "not a readable JPEG file"),
        ("garbage.npy", b"\x93NUMPY nope", "not a readable NumPy .npy file"),
        ("empty.tif", b"", "not a readable TIFF file"),
    ],
)
def test_corrupt_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_image(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_tiff(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _ramp((64, 64)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="cut.tif"):
        read_image(path)


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="objects.npy"):
        read_image(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nothere.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported extension '.txt'"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a zarr store"):
        read_image(tmp_path / "folder")
    (tmp_path / "x.tif").write_bytes(b"")
    with pytest.raises(InputError, match="zarr"):
        read_image(tmp_path / "x.tif", name="raw")


def test_broken_zarr(tmp_path):
    store = tmp_path / "broken.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.zarr is not a readable zarr store"):
        read_image(store)


def test_write_refusals(tmp_path):
    with pytest.raises(InputError, match="unsupported extension '.jpg'"):
        write_image(tmp_path / "x.jpg", _ramp(dtype=np.uint8))
    with pytest.raises(InputError, match="PNG holds 2-D uint8 or uint16"):
        write_image(tmp_path / "x.png", _ramp(dtype=np.float32))
    with pytest.raises(InputError, match="PNG holds 2-D"):
        write_image(tmp_path / "x.png", _ramp((2, 20, 24), np.uint8))
    assert sorted(os.listdir(tmp_path)) == []
    (tmp_path / "odd.tif").mkdir()
    with pytest.raises(InputError, match="it is a folder"):
        check_output_path(tmp_path / "odd.tif")


def test_tiff_header_pointing_nowhere(tmp_path, capfd):
    # tifffile only logs a warning and returns nothing for this file.
    path = tmp_path / "hollow.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(InputError, match="hollow.tif is not a readable TIFF file"):
        read_image(path)
    assert capfd.readouterr().err == ""
