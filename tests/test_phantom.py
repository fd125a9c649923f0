"""Synthetic phantoms: determinism, fields of view, variants, sizes in mm, grids, localizer, BIDS writer, CLI."""

from __future__ import annotations

import json
from functools import cache

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from totalspineseg import labels as L
from totalspineseg.bids_app import derivatives
from totalspineseg.cli import phantom as phantom_cli
from totalspineseg.errors import CannotCreate, UsageError
from totalspineseg.synth import phantom

ISO = (1.0, 1.0, 1.0)
COARSE = (1.5, 1.5, 1.5)
# Label values by name ("L3", "T4-T5"), from the one label table.
V = {s.short: v for v, s in L.FINAL.items() if s.kind == "vertebra" and v in L.VERTEBRAE_POSSIBLE}
D = {s.short: v for v, s in L.FINAL.items() if v in L.DISCS_POSSIBLE}


def _discs_between(first: str, last: str) -> set[int]:
    """Default-sequence discs from `first` to `last` inclusive, by name."""
    names = [L.FINAL[d].short for d in L.DISCS_DEFAULT]
    return {D[n] for n in names[names.index(first) : names.index(last) + 1]}


@cache
def _phantom(seed=0, fov="whole", orientation="RAS", voxel=ISO, **kw):
    return phantom.make_phantom(seed=seed, fov=fov, orientation=orientation, voxel=voxel, **kw)


def _present(labels: np.ndarray) -> set[int]:
    return {int(v) for v in np.unique(labels)} - {0}


def _discs(labels: np.ndarray) -> set[int]:
    return {v for v in _present(labels) if L.is_disc(v)}


def _world_centroid(vol, label) -> np.ndarray:
    ijk = np.argwhere(vol.labels == label).mean(axis=0)
    return vol.affine[:3, :3] @ ijk + vol.affine[:3, 3]


def _resample_labels(src, ref) -> np.ndarray:
    """Nearest-neighbour resampling of `src` labels onto `ref`'s grid, through world coordinates."""
    ijk = np.indices(ref.labels.shape).reshape(3, -1)
    world = ref.affine[:3, :3] @ ijk + ref.affine[:3, 3:]
    inv = np.linalg.inv(src.affine)
    src_ijk = inv[:3, :3] @ world + inv[:3, 3:]
    return ndimage.map_coordinates(src.labels, src_ijk, order=0, mode="constant").reshape(ref.labels.shape)


# --------------------------------------------------------------------------------------------------
# Determinism and content


def test_same_seed_same_phantom_and_different_seeds_differ():
    a = phantom.make_phantom(seed=11, fov="cervical", voxel=COARSE)
    b = phantom.make_phantom(seed=11, fov="cervical", voxel=COARSE)
    c = phantom.make_phantom(seed=12, fov="cervical", voxel=COARSE)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.image, b.image)
    assert np.array_equal(a.affine, b.affine)
    assert a.labels.shape != c.labels.shape or not np.array_equal(a.labels, c.labels)
    assert a.image.dtype == np.float32 and a.labels.dtype == np.uint8


EXPECTED_DISCS = {
    "whole": set(L.DISCS_DEFAULT),
    "cervical": _discs_between("C2-C3", "T1-T2"),
    "cervicothoracic": _discs_between("C2-C3", "T6-T7"),
    "thoracic": _discs_between("T2-T3", "T10-T11"),
    "thoracolumbar": _discs_between("T6-T7", "L5-S"),
    "lumbar": _discs_between("T11-T12", "L5-S"),
}


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("fov", phantom.FOVS)
def test_each_field_of_view_holds_exactly_its_discs(fov, seed):
    ph = _phantom(seed, fov, voxel=COARSE)
    assert _discs(ph.labels) == EXPECTED_DISCS[fov]
    assert {L.CANAL} <= _present(ph.labels)
    if fov == "thoracic":
        assert not set(L.LANDMARK_DISCS) & _present(ph.labels)


def test_whole_spine_has_every_structure():
    found = _present(_phantom(0, "whole", voxel=COARSE).labels)
    assert found == {L.CORD, L.CANAL} | set(L.VERTEBRAE_DEFAULT) | set(L.DISCS_DEFAULT)


@pytest.mark.parametrize("fov", ["cervical", "cervicothoracic"])
def test_cervical_views_start_at_the_atlas(fov):
    found = _present(_phantom(0, fov, voxel=COARSE).labels)
    assert {L.C1, L.C2, L.DISC_C2_C3, L.CORD} <= found


def test_extra_lumbar_adds_l6_between_l5_and_the_sacrum():
    ph = _phantom(2, "lumbar", extra_lumbar=True, voxel=COARSE)
    found = _present(ph.labels)
    order = [V["L5"], L.DISC_L5_L6, L.VERTEBRA_L6, L.DISC_L5_S, L.SACRUM]  # cranio-caudal
    assert set(order) <= found
    z = [_world_centroid(ph, v)[2] for v in order]
    assert z == sorted(z, reverse=True)


def test_missing_disc_removes_only_that_disc_and_shifts_nothing():
    missing = D["T4-T5"]
    full = _phantom(7, "whole", voxel=COARSE)
    gap = _phantom(7, "whole", voxel=COARSE, missing_disc=missing)
    assert _present(full.labels) - _present(gap.labels) == {missing}
    changed = full.labels != gap.labels
    assert np.all(full.labels[changed] == missing) and np.all(gap.labels[changed] == 0)


def test_invalid_missing_disc_is_refused():
    with pytest.raises(ValueError, match="not a disc"):
        phantom.make_phantom(missing_disc=L.DISC_L5_L6)
    with pytest.raises(ValueError, match="not a disc"):
        phantom.make_phantom(missing_disc=L.C2)


# --------------------------------------------------------------------------------------------------
# Anatomy in millimetres


def _z_extent_through_body(ph, label) -> int:
    """Voxels of `label` on the vertical line through its body (the anterior part of the vertebra)."""
    m = ph.labels == label
    xs, ys, _ = np.nonzero(m)
    x = int(np.median(xs))
    y = ys.max() - (ys.max() - np.percentile(ys, 50)) // 3  # well inside the body, in front of the arch
    return int(m[x, int(y)].sum())


def _disc_thickness(ph, disc) -> int:
    m = ph.labels == disc
    xs, ys, _ = np.nonzero(m)
    return int(m[int(np.median(xs)), int(np.median(ys))].sum())


def test_sizes_are_plausible_in_mm():
    ph = _phantom(0, "whole")  # RAS, 1 mm: voxel counts are millimetres
    lumbar = [_z_extent_through_body(ph, V[n]) for n in ("L1", "L2", "L3", "L4", "L5")]
    assert 25 <= np.median(lumbar) <= 30, lumbar
    cervical = [_z_extent_through_body(ph, V[n]) for n in ("C3", "C4", "C5", "C6")]
    assert 11 <= np.median(cervical) <= 17, cervical
    c_disc = np.median([_disc_thickness(ph, D[n]) for n in ("C3-C4", "C4-C5", "C5-C6")])
    l_disc = np.median([_disc_thickness(ph, D[n]) for n in ("L1-L2", "L2-L3", "L3-L4")])
    assert 3 <= c_disc < l_disc and 8 <= l_disc <= 14, (c_disc, l_disc)
    tube = np.isin(ph.labels, [L.CANAL, L.CORD])
    x_mid = int(np.median(np.nonzero(tube)[0]))
    canal_ap = tube[x_mid].sum(axis=0)  # per axial slice
    assert 12 <= np.median(canal_ap[canal_ap > 0]) <= 18


def test_cord_touches_only_canal():
    labels = _phantom(0, "whole").labels
    cord = labels == L.CORD
    shell = ndimage.binary_dilation(cord) & ~cord
    assert set(np.unique(labels[shell]).tolist()) <= {L.CANAL}


def test_discs_lie_between_the_vertebrae_they_separate():
    ph = _phantom(0, "whole", voxel=COARSE)
    for disc in L.DISCS_DEFAULT:
        z = _world_centroid(ph, disc)[2]
        above = _world_centroid(ph, L.vertebra_above_disc(disc))[2]
        below = _world_centroid(ph, L.vertebra_below_disc(disc))[2]
        assert above > z > below, disc


# --------------------------------------------------------------------------------------------------
# Grids


@pytest.mark.parametrize("code", ["RAS", "LPS", "PSR", "LAS", "ASL", "IRP"])
def test_affine_matches_the_requested_orientation(code):
    shape, affine = phantom.make_grid(np.array([[0, 0, 0], [80, 140, 200]]), code, (0.8, 1.1, 3.0), 8.0)
    assert "".join(nib.aff2axcodes(affine)) == code
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.8, 1.1, 3.0))
    assert len(shape) == 3


def test_invalid_orientation_is_refused():
    with pytest.raises(ValueError, match="orientation"):
        phantom.make_phantom(orientation="RAR")


@pytest.mark.parametrize(
    "orientation,voxel", [("LPS", (0.8, 0.8, 2.0)), ("PSR", (0.9, 0.9, 3.0)), ("ASL", (3.5, 1.0, 1.0))]
)
def test_reoriented_anisotropic_render_matches_the_iso_render(orientation, voxel):
    ref = _phantom(4, "lumbar")
    other = _phantom(4, "lumbar", orientation, voxel)
    assert "".join(nib.aff2axcodes(other.affine)) == orientation
    moved = _resample_labels(other, ref)
    for label in _present(ref.labels):
        a, b = ref.labels == label, moved == label
        if a.sum() < 500:  # slivers cut by the field of view edge
            continue
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.8, (label, dice)


def test_localizer_shares_world_space_with_the_main_image():
    main = _phantom(3, "thoracic", "PSR", (0.9, 0.9, 3.0))
    loc = phantom.make_localizer(seed=3)
    assert _present(loc.labels) >= set(L.DISCS_DEFAULT)
    assert loc.labels.shape[2] * np.linalg.norm(loc.affine[:3, 2]) < 100  # thick sagittal slices
    for disc in (D["T3-T4"], D["T6-T7"], D["T9-T10"]):
        assert np.linalg.norm(_world_centroid(main, disc) - _world_centroid(loc, disc)) < 3.0


def test_contrasts_differ_where_expected():
    t2 = _phantom(1, "lumbar", voxel=COARSE)
    t1 = _phantom(1, "lumbar", voxel=COARSE, contrast="T1w")
    for ph in (t1, t2):
        assert ph.image.dtype == np.float32 and ph.image.min() >= 0
    csf = t2.labels == L.CANAL
    bone = t2.labels == V["L3"]
    assert np.median(t2.image[csf]) > np.median(t2.image[bone])
    assert np.median(t1.image[csf]) < np.median(t1.image[bone])
    assert np.median(t2.image[t2.labels == 0]) > 0  # soft tissue around the spine, not a black void


# --------------------------------------------------------------------------------------------------
# Writers and command line


def test_cli_writes_one_phantom_with_localizer(tmp_path):
    out = tmp_path / "ph"
    argv = [str(out), "--seed", "2", "--fov", "lumbar", "--orientation", "LPS", "--voxel", "1", "1", "2"]
    assert phantom_cli.main(argv + ["--localizer"]) == 0
    names = {"image.nii.gz", "labels.nii.gz", "localizer.nii.gz", "localizer_labels.nii.gz"}
    assert {p.name for p in out.iterdir()} == names
    img, lab = nib.load(out / "image.nii.gz"), nib.load(out / "labels.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(img.affine, lab.affine) and img.shape == lab.shape
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert np.allclose(img.get_qform(), img.get_sform())
    assert img.get_data_dtype() == np.float32 and lab.get_data_dtype() == np.uint8
    assert L.DISC_L5_S in np.asarray(lab.dataobj)


@pytest.mark.parametrize("argv", [["--fov", "neck"], ["--voxel", "1", "1"], ["--bids"], ["--participants", "2"]])
def test_cli_parser_errors_exit_64_with_usage(tmp_path, capsys, argv):
    assert phantom_cli.main([str(tmp_path / "x"), *argv]) == 64
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: totalspineseg-phantom")
    assert lines[-1].startswith("totalspineseg-phantom: error:")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["--orientation", "RRS"], "invalid orientation code 'RRS'"),
        (["--missing-disc", str(L.C2)], f"missing disc {L.C2} is not a disc label"),
        (["--missing-disc", str(L.DISC_L5_L6)], "L5-L6 exists only with an extra lumbar vertebra"),
        (["--voxel", "1", "0", "1"], "voxel sizes must be three positive numbers"),
        (["--oblique", "45"], "oblique tilt must be within 30 degrees"),
        (["--bids", "--participants", "0"], "--participants must be at least 1"),
    ],
)
def test_cli_bad_phantom_parameters_are_a_one_line_usage_error(tmp_path, capsys, argv, problem):
    assert phantom_cli.main([str(tmp_path / "x"), *argv]) == UsageError.exit_code == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("totalspineseg-phantom: error:") and problem in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [["--fov", "cervical", "--voxel", "2", "2", "2"], ["--bids", "--participants", "1"]])
def test_cli_unwritable_output_is_a_one_line_cannot_create(tmp_path, capsys, argv):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "out"  # below a plain file: no folder can be made there, whoever runs the test
    assert phantom_cli.main([str(out), *argv]) == CannotCreate.exit_code == 73
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"totalspineseg-phantom: error: cannot write {out}: ")


def test_phantom_spec_is_the_one_parameter_list(tmp_path):
    spec = phantom.PhantomSpec(6, "cervical", "lps", [2, 2, 2], "T1w", missing_disc=D["C4-C5"], oblique_deg=5)
    assert spec.orientation == "LPS" and spec.voxel == (2.0, 2.0, 2.0)
    a = phantom.make_phantom(spec)
    b = phantom.make_phantom(6, "cervical", "LPS", (2, 2, 2), "T1w", missing_disc=D["C4-C5"], oblique_deg=5)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("image", "labels", "affine"))
    paths = phantom.write_phantom(tmp_path, spec)
    assert np.array_equal(np.asarray(nib.load(paths["labels"]).dataobj), a.labels)
    with pytest.raises(ValueError, match="unknown contrast"):
        phantom.PhantomSpec(contrast="PD")
    with pytest.raises(ValueError, match="unknown field of view"):
        phantom.make_phantom(fov="neck")


def test_bids_dataset_with_sessions_and_localizers(tmp_path):
    root = tmp_path / "bids"
    argv = [str(root), "--bids", "--participants", "2", "--sessions", "2", "--localizer", "--seed", "4"]
    assert phantom_cli.main(argv) == 0

    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == derivatives.BIDS_VERSION and desc["DatasetType"] == "raw"
    assert {"Name", "License", "Authors", "GeneratedBy"} <= desc.keys()
    deriv = root / "derivatives" / "labels"
    assert json.loads((deriv / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert (deriv / "desc-spine_dseg.tsv").read_text() == derivatives.dseg_lut()
    assert (root / "README").is_file() and (root / "participants.json").is_file()
    rows = (root / "participants.tsv").read_text().splitlines()
    assert rows[0].split("\t")[0] == "participant_id"
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-01", "sub-02"]

    images = sorted(root.glob("sub-*/ses-*/anat/*.nii.gz"))
    assert len(images) == 2 * 2 * 2  # participants x sessions x (main + localizer)
    for sub in ("sub-01", "sub-02"):
        for ses in ("ses-01", "ses-02"):
            anat = root / sub / ses / "anat"
            assert (anat / f"{sub}_{ses}_acq-localizer_T2w.nii.gz").is_file()
            mains = [p for p in anat.glob("*.nii.gz") if "localizer" not in p.name]
            assert len(mains) == 1 and mains[0].name in (f"{sub}_{ses}_T2w.nii.gz", f"{sub}_{ses}_T1w.nii.gz")
    for image in images:
        stem = image.name[: -len(".nii.gz")].rsplit("_", 1)[0]
        truth = deriv / image.parent.relative_to(root) / f"{stem}_desc-spine_dseg.nii.gz"
        img, lab = nib.load(image), nib.load(truth)
        assert img.shape == lab.shape and np.allclose(img.affine, lab.affine)
        found = _present(np.asarray(lab.dataobj))
        if "localizer" in image.name:
            assert set(L.LANDMARK_DISCS) <= found
        else:
            assert found & set(L.DISCS_DEFAULT)  # a narrow field of view, with discs in it
    size = sum(p.stat().st_size for p in root.rglob("*.nii.gz"))
    assert size < 30e6


def test_bids_dataset_without_sessions(tmp_path):
    root = phantom.write_bids_dataset(tmp_path / "bids", participants=2, seed=0)
    for sub in ("sub-01", "sub-02"):
        images = list((root / sub / "anat").glob("*.nii.gz"))
        assert len(images) == 1 and images[0].name in (f"{sub}_T1w.nii.gz", f"{sub}_T2w.nii.gz")
        assert (root / "derivatives" / "labels" / sub / "anat" / f"{sub}_desc-spine_dseg.nii.gz").is_file()
    assert not list(root.glob("sub-*/ses-*"))
