"""Tests for totalspineseg.volume: validation, orientation, grids, resampling, writing, cropping."""

from __future__ import annotations

import gzip
import logging
import os

import nibabel as nib
import numpy as np
import pytest

from totalspineseg import resample as R
from totalspineseg import volume as V
from totalspineseg.errors import InputError

RNG_SEED = 1234


def _affine(zooms=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = origin
    return affine


def _write(path, data, affine=None, **header_fields):
    img = nib.Nifti1Image(data, _affine() if affine is None else affine)
    for key, value in header_fields.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


def _world(affine, index) -> np.ndarray:
    index = np.atleast_2d(np.asarray(index, dtype=np.float64))
    return index @ affine[:3, :3].T + affine[:3, 3]


def _voxel(affine, world) -> np.ndarray:
    inverse = np.linalg.inv(affine)
    return np.atleast_2d(world) @ inverse[:3, :3].T + inverse[:3, 3]


# --------------------------------------------------------------------------------------------------
# Rejected inputs: every message is one line, names the file, and says what is wrong.


def _valid_bytes(tmp_path, name="valid.nii.gz") -> bytes:
    data = np.random.default_rng(RNG_SEED).random((10, 12, 8)).astype(np.float32)
    return _write(tmp_path / name, data).read_bytes()


def _make_txt(tmp_path):
    path = tmp_path / "image.txt"
    path.write_text("hello")
    return path


def _make_random_gz(tmp_path):
    path = tmp_path / "random.nii.gz"
    path.write_bytes(np.random.default_rng(RNG_SEED).bytes(3000))
    return path


def _make_gzipped_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(RNG_SEED).bytes(3000)))
    return path


def _make_random_nii(tmp_path):
    path = tmp_path / "random.nii"
    path.write_bytes(np.random.default_rng(RNG_SEED).bytes(3000))
    return path


def _make_truncated_gz(tmp_path):
    content = _valid_bytes(tmp_path)
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(content[: len(content) // 2])
    return path


def _make_truncated_gz_header(tmp_path):
    content = _valid_bytes(tmp_path)
    path = tmp_path / "truncated_header.nii.gz"
    path.write_bytes(content[:60])
    return path


def _make_truncated_nii(tmp_path):
    content = _valid_bytes(tmp_path, "valid.nii")
    path = tmp_path / "truncated.nii"
    path.write_bytes(content[: len(content) // 2])
    return path


def _make_2d(tmp_path):
    return _write(tmp_path / "flat.nii.gz", np.zeros((8, 9), np.float32))


def _make_5d(tmp_path):
    return _write(tmp_path / "five.nii.gz", np.zeros((4, 4, 4, 2, 3), np.float32))


def _make_empty_axis(tmp_path):
    return _write(tmp_path / "empty.nii.gz", np.zeros((0, 3, 4), np.float32))


def _make_singular_affine(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    singular = _affine((1.0, 2.0, 3.0))
    singular[:, 1] = 0.0
    singular[3, 3] = 1.0
    img.header.set_sform(singular, code=1)
    path = tmp_path / "singular.nii.gz"
    nib.save(img, str(path))
    return path


def _make_nan_affine(tmp_path):
    affine = _affine((1.0, 2.0, 3.0))
    affine[0, 3] = np.nan
    with np.errstate(invalid="ignore"):
        return _write(tmp_path / "nan_affine.nii.gz", np.zeros((4, 4, 4), np.float32), affine)


def _make_nan_voxel(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    return _write(tmp_path / "nan_voxel.nii.gz", data)


def _make_inf_voxel(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = -np.inf
    data[3, 3, 3] = np.inf
    return _write(tmp_path / "inf_voxel.nii.gz", data)


def _make_missing(tmp_path):
    return tmp_path / "missing.nii.gz"


def _make_directory(tmp_path):
    path = tmp_path / "folder.nii.gz"
    path.mkdir()
    return path


REJECTIONS = [
    (_make_missing, "file not found"),
    (_make_directory, "not a file"),
    (_make_txt, "not a NIfTI file (expected .nii or .nii.gz)"),
    (_make_random_gz, "not a gzip file"),
    (_make_gzipped_garbage, "not a valid NIfTI file"),
    (_make_random_nii, "not a valid NIfTI file"),
    (_make_truncated_gz, "truncated or corrupt"),
    (_make_truncated_gz_header, "truncated or corrupt"),
    (_make_truncated_nii, "truncated or corrupt"),
    (_make_2d, "2-D image"),
    (_make_5d, "5-D image"),
    (_make_empty_axis, "empty image"),
    (_make_singular_affine, "affine is not invertible"),
    (_make_nan_affine, "affine has non-finite values"),
    (_make_nan_voxel, "non-finite values (NaN or Inf) in 1 voxels"),
    (_make_inf_voxel, "non-finite values (NaN or Inf) in 2 voxels"),
]


@pytest.mark.parametrize("loader", [V.load_volume, V.load_labels], ids=["volume", "labels"])
@pytest.mark.parametrize("make, problem", REJECTIONS, ids=[make.__name__[6:] for make, _ in REJECTIONS])
def test_rejected_inputs_name_the_file_and_the_problem(tmp_path, loader, make, problem):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        loader(path)
    message = str(info.value)
    assert info.value.path == str(path)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "data, problem",
    [
        (np.full((3, 3, 3), 1.5, np.float32), "non-integer values"),
        (np.full((3, 3, 3), -2, np.int16), "negative values"),
        (np.full((3, 3, 3), 70000, np.int32), "above 65535"),
        (np.ones((3, 3, 3, 2), np.uint8), "4-D label map with 2 volumes"),
    ],
    ids=["fractional", "negative", "too-large", "4-D"],
)
def test_label_maps_must_be_non_negative_integers(tmp_path, data, problem):
    path = _write(tmp_path / "seg.nii.gz", data)
    with pytest.raises(InputError, match=problem):
        V.load_labels(path)


# --------------------------------------------------------------------------------------------------
# Accepted inputs


def test_load_volume_gives_float32_data_affine_and_header(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    affine = _affine((0.8, 0.9, 3.0), (-10.0, 4.0, 2.5))
    path = _write(tmp_path / "img.nii", data, affine)
    vol = V.load_volume(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.path == path and vol.shape == (3, 4, 5)
    np.testing.assert_allclose(vol.zooms, (0.8, 0.9, 3.0), rtol=1e-6)
    assert vol.header.get_data_dtype() == np.int16


def test_sform_is_preferred_and_qform_is_the_fallback(tmp_path):
    sform, qform = _affine((1.0, 1.0, 1.0), (5.0, 0.0, 0.0)), _affine((2.0, 2.0, 2.0))
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None)
    img.header.set_qform(qform, code=1)
    img.header.set_sform(sform, code=1)
    nib.save(img, str(tmp_path / "both.nii.gz"))
    np.testing.assert_allclose(V.load_volume(tmp_path / "both.nii.gz").affine, sform)
    img.header.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "qform.nii.gz"))
    np.testing.assert_allclose(V.load_volume(tmp_path / "qform.nii.gz").affine, qform)


def test_4d_image_is_averaged_over_its_last_axis(tmp_path, caplog):
    raw = np.random.default_rng(RNG_SEED).integers(0, 1000, (5, 6, 7, 3)).astype(np.int16)
    img = nib.Nifti1Image(raw, _affine())
    img.header.set_slope_inter(2.0, 1.0)
    img.set_data_dtype(np.int16)
    path = tmp_path / "series.nii.gz"
    nib.save(img, str(path))
    expected = np.asanyarray(nib.load(str(path)).dataobj).mean(axis=-1)
    with caplog.at_level(logging.WARNING, logger="totalspineseg.volume"):
        vol = V.load_volume(path)
    assert vol.data.dtype == np.float32 and vol.shape == (5, 6, 7)
    np.testing.assert_allclose(vol.data, expected, rtol=1e-6)
    assert "3 volumes" in caplog.text


def test_singleton_4th_axis_is_a_plain_3d_volume(tmp_path, caplog):
    data = np.random.default_rng(RNG_SEED).random((4, 5, 6, 1)).astype(np.float32)
    path = _write(tmp_path / "single.nii.gz", data)
    with caplog.at_level(logging.WARNING, logger="totalspineseg.volume"):
        vol = V.load_volume(path)
    np.testing.assert_array_equal(vol.data, data[..., 0])
    assert caplog.text == ""
    seg = V.load_labels(_write(tmp_path / "seg.nii.gz", np.ones((4, 5, 6, 1), np.uint8)))
    assert seg.shape == (4, 5, 6)


@pytest.mark.parametrize(
    "data, dtype",
    [
        (np.array([0, 1, 255], np.float32), np.uint8),
        (np.array([0, 2.9999999, 7], np.float64), np.uint8),
        (np.array([0, 256, 3], np.int32), np.uint16),
    ],
)
def test_load_labels_gives_the_smallest_unsigned_dtype(tmp_path, data, dtype):
    vol = V.load_labels(_write(tmp_path / "seg.nii.gz", np.resize(data, (3, 3, 3))))
    assert vol.data.dtype == dtype
    np.testing.assert_array_equal(vol.data, np.rint(np.resize(data, (3, 3, 3))))


# --------------------------------------------------------------------------------------------------
# Orientation

ORIENTATIONS = ["RAS", "LPS", "PSR", "ASL", "LAI", "SPL", "IRP"]


def _phantom(shape=(7, 9, 11), zooms=(0.8, 0.9, 3.0)):
    data = np.random.default_rng(RNG_SEED).random(shape).astype(np.float32)
    return data, _affine(zooms, (-20.0, 11.0, 3.0))


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_canonical_round_trip_is_exact(codes):
    data, affine = R.reorient(*_phantom(), codes)
    assert "".join(nib.aff2axcodes(affine)) == codes
    data_c, affine_c = R.to_canonical(data, affine)
    assert nib.aff2axcodes(affine_c) == ("R", "A", "S")
    reference = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(data_c, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(affine_c, reference.affine, atol=1e-9)
    assert R.canonical_grid(data.shape, affine) == (data_c.shape, pytest.approx(affine_c))
    back = R.from_canonical(data_c, affine_c, affine, data.shape)
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back, data)


def test_canonical_round_trip_on_an_oblique_grid():
    data, affine = _phantom()
    angle = np.deg2rad(20)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine[:3, :3] = rotation @ affine[:3, :3]
    data, affine = R.reorient(data, affine, "PIL")
    data_c, affine_c = R.to_canonical(data, affine)
    np.testing.assert_array_equal(R.from_canonical(data_c, affine_c, affine, data.shape), data)


def test_from_canonical_refuses_a_grid_that_is_not_a_reorientation():
    data, affine = _phantom()
    data_c, affine_c = R.to_canonical(data, affine)
    with pytest.raises(ValueError, match="resample_to_grid"):
        R.from_canonical(data_c, affine_c, _affine((1.0, 1.0, 1.0)), data.shape)


# --------------------------------------------------------------------------------------------------
# The 1 mm grid


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR"])
def test_iso_grid_follows_the_ceil_and_half_voxel_rule(codes):
    shape, zooms = (75, 311, 17), (0.8, 0.8, 3.3)
    _, affine = R.reorient(np.zeros(shape, np.uint8), _affine(zooms, (5.0, -7.0, 12.0)), codes)
    native_shape = R.reorient(np.zeros(shape, np.uint8), _affine(zooms), codes)[0].shape
    iso_shape, iso_affine = R.iso_grid(native_shape, affine)
    native_zooms = V.voxel_sizes(affine)
    assert iso_shape == tuple(int(np.ceil(n * z)) for n, z in zip(native_shape, native_zooms, strict=False))
    np.testing.assert_allclose(V.voxel_sizes(iso_affine), 1.0)
    np.testing.assert_allclose(iso_affine[:3, :3] / V.voxel_sizes(iso_affine), affine[:3, :3] / native_zooms)
    # The outer corner of voxel 0 is shared; the far outer corner lies at most one new voxel beyond.
    np.testing.assert_allclose(_world(iso_affine, [-0.5] * 3), _world(affine, [-0.5] * 3), atol=1e-9)
    far_native = _voxel(iso_affine, _world(affine, np.asarray(native_shape) - 0.5))[0]
    overshoot = np.asarray(iso_shape) - 0.5 - far_native
    assert np.all(overshoot >= -1e-9) and np.all(overshoot < 1.0)


def test_iso_grid_keeps_singleton_axes_and_ignores_float32_rounding():
    affine = _affine(np.float32([0.8, 0.8, 5.0]).astype(np.float64))
    assert R.iso_grid((250, 250, 1), affine)[0] == (200, 200, 1)
    assert R.iso_grid((10, 10, 10), _affine((1.0, 1.0, 1.0)), spacing=(0.5, 2.0, 1.0))[0] == (20, 5, 10)


def test_to_iso_matches_canonical_then_resample_and_keeps_the_edges():
    data, affine = R.reorient(np.ones((40, 50, 12), np.float32), _affine((0.8, 0.8, 3.0)), "PSR")
    iso, iso_affine = V.to_iso(V.Volume(data, affine))
    assert nib.aff2axcodes(iso_affine) == ("R", "A", "S")
    np.testing.assert_allclose(V.voxel_sizes(iso_affine), 1.0)
    assert iso.dtype == np.float32 and iso.shape == (32, 40, 36)
    # SimpleITK's rule: voxels within half a source voxel of the outer voxel centres take the edge value.
    np.testing.assert_array_equal(iso, 1.0)
    ramp = np.random.default_rng(RNG_SEED).random(data.shape).astype(np.float32)
    data_c, affine_c = R.to_canonical(ramp, affine)
    expected = R.resample_to_grid(data_c, affine_c, iso.shape, iso_affine, "image")
    np.testing.assert_allclose(V.to_iso(V.Volume(ramp, affine))[0], expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR", "ASL"])
@pytest.mark.parametrize("zooms", [(1.0, 1.0, 1.0), (2.0, 1.0, 3.0), (1.0, 4.0, 5.0)])
def test_labels_to_1mm_and_back_are_exact(codes, zooms):
    labels = np.random.default_rng(RNG_SEED).integers(0, 30, (12, 10, 8)).astype(np.uint8)
    data, affine = R.reorient(labels, _affine(zooms, (3.0, -4.0, 5.0)), codes)
    iso_shape, iso_affine = R.iso_grid(*R.canonical_grid(data.shape, affine))
    iso = R.resample_to_grid(data, affine, iso_shape, iso_affine, "labels")
    assert iso.dtype == np.uint8 and set(np.unique(iso)) <= set(np.unique(data))
    back = R.resample_to_grid(iso, iso_affine, data.shape, affine, "labels")
    assert back.dtype == data.dtype and back.shape == data.shape
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("zooms", [(1.2, 1.2, 1.2), (0.8, 0.7, 3.3)])
def test_labels_back_to_native_do_not_depend_on_the_input_orientation(tmp_path, zooms):
    """Same anatomy stored as RAS, LPS, PSR...: the labels on the native grid are the same voxels."""
    shape, base = (23, 31, 12), _affine(zooms, (-31.7, 12.2, 55.1))
    iso_shape, _ = R.iso_grid(*R.canonical_grid(shape, base))
    iso_labels = np.random.default_rng(RNG_SEED).integers(0, 50, iso_shape).astype(np.uint8)
    results = []
    for codes in ["RAS", "LPS", "PSR", "ASL"]:
        data, affine = R.reorient(np.zeros(shape, np.uint8), base, codes)
        native = V.load_labels(V.save_nifti(tmp_path / f"{codes}.nii.gz", data, affine))  # float32 affine
        iso_affine = R.iso_grid(*R.canonical_grid(native.shape, native.affine))[1]
        back = R.resample_to_grid(iso_labels, iso_affine, native.shape, native.affine, "labels")
        results.append(R.to_canonical(back, native.affine)[0])
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_resample_kinds_and_outside_values():
    data = np.full((6, 6, 6), 0.75, np.float32)
    affine = _affine()
    shifted = _affine(origin=(3.2, 0.0, 0.0))
    image = R.resample_to_grid(data * 4, affine, (6, 6, 6), shifted, "image")
    assert image.dtype == np.float32
    np.testing.assert_allclose(image[:2], 3.0)  # up to 2.2 voxels: inside or within the half-voxel border
    np.testing.assert_array_equal(image[3:], 0.0)  # beyond 5.5: outside
    soft = R.resample_to_grid(data * 4, affine, (6, 6, 6), affine, "soft")
    np.testing.assert_array_equal(soft, 1.0)
    with pytest.raises(ValueError, match="unknown resampling kind"):
        R.resample_to_grid(data, affine, (6, 6, 6), affine, "cubic")


def _rotated(affine, degrees, axis=2):
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(4)
    rotation[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
    return rotation @ affine


def test_fast_path_is_used_for_reorientation_and_equals_map_coordinates(monkeypatch):
    rng = np.random.default_rng(RNG_SEED)
    src = rng.random((9, 8, 7)).astype(np.float32)
    labels = rng.integers(0, 9, (9, 8, 7)).astype(np.uint8)
    src_affine = _affine((0.8, 0.9, 3.0), (1.0, 2.0, 3.0))
    targets = []
    for codes in ["LPS", "PSR", "ASL"]:
        reoriented_data, reoriented = R.reorient(src, src_affine, codes)
        targets.append((reoriented_data.shape, reoriented))
        shifted = reoriented.copy()
        shifted[:3, 3] += reoriented[:3, :3] @ [2.0, -1.0, 3.0]  # integer shift, partly outside
        targets.append((reoriented_data.shape, shifted))
    scaled_shape, scaled = R.iso_grid(src.shape, src_affine)  # axis-aligned, non-integer
    targets.append((scaled_shape, scaled))

    expected = []
    for shape, target in targets:
        index_map = np.linalg.inv(src_affine) @ target
        expected.append(
            (R._resample_general(src, index_map, shape, 1), R._resample_general(labels, index_map, shape, 0))
        )

    def _no_general(*args, **kwargs):
        raise AssertionError("the general path was used")

    monkeypatch.setattr(R, "_resample_general", _no_general)
    for (shape, target), (image_ref, labels_ref) in zip(targets, expected, strict=False):
        image = R.resample_to_grid(src, src_affine, shape, target, "image")
        np.testing.assert_allclose(image, image_ref, atol=1e-6)
        nearest = R.resample_to_grid(labels, src_affine, shape, target, "labels")
        np.testing.assert_array_equal(nearest, labels_ref)

    same = R.resample_to_grid(src, src_affine, src.shape, src_affine, "image")
    np.testing.assert_array_equal(same, src)
    assert not np.shares_memory(same, src)


def test_rotated_grids_use_map_coordinates(monkeypatch):
    src = np.random.default_rng(RNG_SEED).random((10, 10, 10)).astype(np.float32)
    affine = _affine()
    rotated = _rotated(affine, 30)
    monkeypatch.setattr(R, "_CHUNK_VOXELS", 150)  # several slabs
    monkeypatch.setattr(R, "_resample_separable", lambda *a, **k: pytest.fail("separable path used"))
    out = R.resample_to_grid(src, affine, (10, 10, 10), rotated, "image")
    centre = _voxel(affine, _world(rotated, [4.0, 5.0, 6.0]))[0]
    from scipy.ndimage import map_coordinates

    assert out[4, 5, 6] == pytest.approx(map_coordinates(src, centre[:, None], order=1)[0], abs=1e-6)
    assert out[0, 9, 0] == 0.0  # rotated far outside the source


# --------------------------------------------------------------------------------------------------
# Point labels


def _points_case(n_points=25):
    """Single-voxel points on a 1 mm canonical grid, and a coarse native grid with 5 mm slices."""
    rng = np.random.default_rng(RNG_SEED)
    fine_shape, fine_affine = (40, 60, 120), _affine(origin=(-20.0, -30.0, -60.0))
    coarse_data, coarse_affine = R.reorient(
        np.zeros((10, 75, 150), np.uint8), _affine((5.0, 0.8, 0.8), (-22.0, -30.0, -60.0)), "LPS"
    )
    fine = np.zeros(fine_shape, np.uint8)
    picks = rng.choice(np.arange(fine.size), n_points, replace=False)
    fine.flat[picks] = np.arange(1, n_points + 1)
    return fine, fine_affine, coarse_data.shape, coarse_affine


def _true_positions(fine, fine_affine, coarse_affine):
    labels = np.unique(fine[fine > 0])
    voxels = np.array([np.argwhere(fine == label)[0] for label in labels])
    return labels, _voxel(coarse_affine, _world(fine_affine, voxels))


def test_points_all_survive_once_within_one_coarse_voxel():
    fine, fine_affine, coarse_shape, coarse_affine = _points_case()
    # Two more points in the same 5 mm slice voxel as point 1: one fine voxel apart along the slice axis.
    first = np.argwhere(fine == 1)[0]
    fine[tuple(first + [1, 0, 0])] = 26
    fine[tuple(first + [2, 0, 0])] = 27
    out = R.resample_to_grid(fine, fine_affine, coarse_shape, coarse_affine, "points")
    assert out.dtype == np.uint8 and out.shape == coarse_shape
    labels, true_positions = _true_positions(fine, fine_affine, coarse_affine)
    values, counts = np.unique(out[out > 0], return_counts=True)
    np.testing.assert_array_equal(values, labels)
    np.testing.assert_array_equal(counts, 1)
    for label, position in zip(labels, true_positions, strict=False):
        placed = np.argwhere(out == label)[0]
        assert np.all(np.abs(placed - position) <= 1.0 + 1e-9), label


def test_colliding_point_moves_to_the_nearest_free_voxel_in_world_distance():
    fine_affine, coarse_affine = _affine(), _affine((5.0, 1.0, 1.0))
    fine = np.zeros((20, 10, 10), np.uint8)
    fine[10, 5, 5], fine[11, 5, 5] = 3, 7  # both fall in coarse voxel (2, 5, 5)
    out = R.resample_to_grid(fine, fine_affine, (4, 10, 10), coarse_affine, "points")
    assert out[2, 5, 5] == 3
    moved = np.argwhere(out == 7)
    assert len(moved) == 1 and moved[0][0] == 2  # a 1 mm in-plane step, not a 5 mm slice step
    assert np.abs(moved[0] - [2, 5, 5]).sum() == 1


def test_points_outside_the_field_of_view_are_clipped_in_and_blobs_use_their_centroid():
    affine = _affine()
    fine = np.zeros((30, 30, 30), np.uint8)
    fine[0, 15, 15] = 1  # outside the small target grid below
    fine[20:23, 20, 20] = 2  # a 3-voxel blob: centroid (21, 20, 20)
    target = _affine(origin=(10.0, 10.0, 10.0))
    out = R.resample_to_grid(fine, affine, (15, 15, 15), target, "points")
    assert tuple(np.argwhere(out == 1)[0]) == (0, 5, 5)
    assert tuple(np.argwhere(out == 2)[0]) == (11, 10, 10)
    assert R.resample_to_grid(np.zeros((3, 3, 3), np.uint8), affine, (2, 2, 2), affine, "points").sum() == 0


def test_points_round_trip_through_1mm_keeps_every_level_nearby():
    fine, fine_affine, coarse_shape, coarse_affine = _points_case(n_points=40)
    coarse = R.resample_to_grid(fine, fine_affine, coarse_shape, coarse_affine, "points")
    iso_shape, iso_affine = R.iso_grid(*R.canonical_grid(coarse_shape, coarse_affine))
    iso = R.resample_to_grid(coarse, coarse_affine, iso_shape, iso_affine, "points")
    back = R.resample_to_grid(iso, iso_affine, coarse_shape, coarse_affine, "points")
    # 0.8 mm -> 1 mm loses sub-millimetre precision, so a point may land one native voxel away.
    for label in range(1, 41):
        (before,), (after,) = np.argwhere(coarse == label), np.argwhere(back == label)
        assert np.all(np.abs(after - before) <= 1), label


# --------------------------------------------------------------------------------------------------
# Writing


def test_save_nifti_writes_matching_qform_sform_and_data(tmp_path):
    data = np.random.default_rng(RNG_SEED).integers(0, 100, (6, 7, 8)).astype(np.int64)
    _, affine = R.reorient(data, _affine((0.8, 0.8, 3.0), (-12.0, 30.0, 7.5)), "PSR")
    affine = _rotated(affine, 12, axis=0)
    path = V.save_nifti(tmp_path / "seg.nii.gz", data, affine)
    assert path == tmp_path / "seg.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]
    img = nib.load(str(path))
    header = img.header
    np.testing.assert_allclose(header.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-5)
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    assert header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(header.get_zooms(), V.voxel_sizes(affine), rtol=1e-6)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)


@pytest.mark.parametrize(
    "data, dtype, stored",
    [
        (np.array([0, 300], np.int32), None, np.uint16),
        (np.array([True, False]), None, np.uint8),
        (np.array([0.25, 1.0], np.float64), None, np.float32),
        (np.array([0.6, 2.4], np.float32), np.uint8, np.uint8),
    ],
)
def test_save_nifti_dtypes(tmp_path, data, dtype, stored):
    data = np.resize(data, (2, 2, 2))
    path = V.save_nifti(tmp_path / "out.nii", data, _affine(), dtype=dtype)
    img = nib.load(str(path))
    assert img.get_data_dtype() == stored
    expected = np.rint(data) if np.issubdtype(np.dtype(stored), np.integer) else data
    np.testing.assert_allclose(np.asanyarray(img.dataobj), expected, rtol=1e-7)


def test_save_nifti_reuses_a_header_without_its_scaling(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_slope_inter(2.0, 1.0)
    header.set_sform(_affine(), code=2)
    header["descrip"] = b"input"
    soft = np.random.default_rng(RNG_SEED).random((4, 4, 4)).astype(np.float32)
    img = nib.load(str(V.save_nifti(tmp_path / "soft.nii.gz", soft, _affine((2.0, 2.0, 2.0)), header=header)))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), soft)
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.affine, _affine((2.0, 2.0, 2.0)))
    assert img.header["descrip"].item() == b"input"


def test_save_nifti_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    previous = V.save_nifti(tmp_path / "seg.nii.gz", np.ones((3, 3, 3), np.uint8), _affine())
    before = previous.read_bytes()
    written = []

    def failing_save(img, filename):
        written.append(filename)
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(V.nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        V.save_nifti(tmp_path / "seg.nii.gz", np.zeros((3, 3, 3), np.uint8), _affine())
    with pytest.raises(OSError):
        V.save_nifti(tmp_path / "new.nii", np.zeros((3, 3, 3), np.uint8), _affine())
    assert [os.path.basename(name)[0] for name in written] == [".", "."]
    assert written[0].endswith(".nii.gz") and written[1].endswith(".nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]
    assert previous.read_bytes() == before


def test_save_nifti_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = V.save_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), np.uint8), _affine())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_nifti_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=".nii or .nii.gz"):
        V.save_nifti(tmp_path / "a.mgz", np.zeros((2, 2, 2)), _affine())


def test_saved_file_loads_back_identically(tmp_path):
    data, affine = _phantom()
    vol = V.load_volume(V.save_nifti(tmp_path / "img.nii.gz", data, affine))
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Cropping


def test_crop_to_mask_and_paste_round_trip():
    data, affine = _phantom(shape=(20, 30, 25))
    mask = np.zeros(data.shape, np.uint8)
    mask[1:5, 10:12, 20:24] = 3
    cropped, cropped_affine, slices = R.crop_to_mask(data, mask, affine, margin=2)
    assert slices == (slice(0, 7), slice(8, 14), slice(18, 25))
    np.testing.assert_array_equal(cropped, data[slices])
    np.testing.assert_allclose(_world(cropped_affine, [0, 0, 0]), _world(affine, [0, 8, 18]))
    pasted = R.paste(cropped, slices, data.shape, fill=-1)
    np.testing.assert_array_equal(pasted[slices], data[slices])
    assert pasted.sum() == pytest.approx(cropped.sum() - (data.size - cropped.size), rel=1e-5)
    with pytest.raises(ValueError, match="empty mask"):
        R.crop_to_mask(data, np.zeros_like(mask), affine, margin=2)
