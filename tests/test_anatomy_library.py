"""The anatomy library, composite spines and SynthSeg-style images (the lite model's training data).

They need the anatomy sources in ../shared/data/anatomy and are skipped, with the reason, without them.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from totalspineseg import labels as L

ANATOMY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anatomy"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if not ANATOMY.is_dir():
        pytest.skip(f"anatomy sources not available: {ANATOMY} is absent")
    from totalspineseg.synth import library

    mp = pytest.MonkeyPatch()
    mp.setenv("TOTALSPINESEG_ANATOMY_CACHE", str(tmp_path_factory.mktemp("anatomy-cache")))
    try:
        built = library.load_library(ANATOMY)
        cached = library.load_library(ANATOMY)  # read back from the cache just written
    finally:
        mp.undo()
    assert {k: len(v) for k, v in built.pieces.items()} == {k: len(v) for k, v in cached.pieces.items()}
    for k in built.pieces:
        for a, b in zip(built.pieces[k], cached.pieces[k], strict=True):
            assert np.array_equal(a.mask, b.mask) and a.body == b.body and a.centre == b.centre
    return cached


def test_every_vertebra_and_the_sacrum_has_a_real_piece(lib):
    needed = [v for v in L.VERTEBRAE_DEFAULT]
    assert all(lib.pieces.get(v) for v in needed), [L.FINAL[v].short for v in needed if not lib.pieces.get(v)]
    assert {"PAM50", "verse004", "TotalSegmentator"} <= set(lib.sources())
    # Lumbar shapes come from more than one source, so the training spines vary.
    assert all(len(lib.pieces[v]) >= 2 for v in (41, 42, 43, 44, 45))


def test_pieces_have_their_foramen_empty_and_their_body_in_front(lib):
    for v, pieces in lib.pieces.items():
        for p in pieces:
            cu, cv = p.centre
            last = p.body[0] + 20 if v == L.SACRUM else p.body[1]  # the sacral canal curves back below S1
            assert not p.mask[cu, cv, p.body[0]:last + 1].any(), (L.FINAL[v].short, p.source)
            if v not in (L.C1, L.SACRUM):
                assert p.body_v[0] > cv, (L.FINAL[v].short, p.source)
                assert 8 <= p.height <= 45, (L.FINAL[v].short, p.source, p.height)


def test_lumbar_bodies_are_bigger_than_cervical_ones(lib):
    def mean_width(v):
        return np.mean([p.width for p in lib.pieces[v]])

    assert mean_width(44) > 1.4 * mean_width(15)


def _centroid_s(labels, value):
    return float(np.nonzero(labels == value)[2].mean())


@pytest.fixture(scope="module")
def spine(lib):
    from totalspineseg.synth import composite

    return composite.build_composite(lib, np.random.default_rng(5))


def test_composite_stacks_the_vertebrae_in_order_with_discs_between(spine):
    lab = spine.labels
    mids = [_centroid_s(lab, v) for v in spine.sequence[1:]]  # C2 ... sacrum (C1's ring surrounds the dens)
    assert mids == sorted(mids)
    for above, below in zip(spine.sequence[1:-1], spine.sequence[2:], strict=True):
        disc = L.DISC_L5_S if below == L.SACRUM else 50 + below
        assert (lab == disc).sum() > 200, L.FINAL[disc].short
        s = _centroid_s(lab, disc)
        assert spine.body_span[above][0] < s < spine.body_span[below][1], L.FINAL[disc].short


def test_composite_canal_holds_the_cord_which_ends_in_a_conus(spine):
    lab = spine.labels
    cord, canal = lab == L.CORD, lab == L.CANAL
    cord_s = np.nonzero(cord.any(axis=(0, 1)))[0]
    t12_mid = sum(spine.body_span[32]) / 2
    assert t12_mid < cord_s.max() < spine.body_span[42][1]  # conus between T12 and L2
    canal_s = np.nonzero(canal.any(axis=(0, 1)))[0]
    assert canal_s.max() > spine.body_span[L.SACRUM][0]  # the canal goes on into the sacrum
    # The cord lies inside the canal: most of its surface touches canal fluid (PAM50's CSF leaves it touching the
    # dura in places: epidural tissue there), and none of it touches bone or a disc.
    shell = ndimage.binary_dilation(cord) & ~cord
    assert np.isin(lab[shell], [L.CANAL, L.CORD]).mean() > 0.7
    assert not np.isin(lab[shell], L.VERTEBRAE_POSSIBLE + L.DISCS_POSSIBLE).any()


def test_composite_variants_and_reproducibility(lib):
    from totalspineseg.synth import composite

    l6 = composite.build_composite(lib, np.random.default_rng(9), extra_lumbar=True, context=False)
    assert (l6.labels == L.VERTEBRA_L6).any() and (l6.labels == L.DISC_L5_L6).any()
    assert _centroid_s(l6.labels, 45) < _centroid_s(l6.labels, 46) < _centroid_s(l6.labels, L.SACRUM)
    gone = composite.build_composite(lib, np.random.default_rng(9), missing_disc=93, context=False)
    assert not (gone.labels == 93).any() and (gone.labels == 94).any()
    again = composite.build_composite(lib, np.random.default_rng(9), missing_disc=93, context=False)
    assert np.array_equal(gone.labels, again.labels)


def test_synthetic_images_have_exact_final_labels_on_their_own_grid(lib):
    from totalspineseg.synth import synthseg

    spec = synthseg.SynthSpec(3, "lumbar", "sagittal", "PIR", (1.0, 1.0, 4.0), 5.0, False, None, "T2w")
    vol = synthseg.render_synthetic(lib, spec)
    assert vol.image.shape == vol.labels.shape and np.isfinite(vol.image).all()
    assert np.allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), (1.0, 1.0, 4.0))
    present = set(np.unique(vol.labels).tolist()) - {0}
    assert present <= set(L.FINAL), present - set(L.FINAL)  # no context value leaks into the labels
    assert {41, 42, 43, 44, 45, L.SACRUM, L.DISC_L5_S, L.CANAL} <= present
    # Contrast: on this T2w draw, canal fluid is brighter than bone on average.
    assert vol.image[vol.labels == L.CANAL].mean() > vol.image[np.isin(vol.labels, (42, 43, 44))].mean()
    again = synthseg.render_synthetic(lib, spec)
    assert np.array_equal(vol.image, again.image) and np.array_equal(vol.labels, again.labels)


def test_drawn_specs_cover_planes_fields_of_view_and_contrasts():
    from totalspineseg.synth import synthseg

    specs = [synthseg.draw_spec(i) for i in range(300)]
    assert {s.plane for s in specs} == {"sagittal", "axial", "coronal", "3d"}
    assert {s.fov for s in specs} == set(synthseg.FOV_LIMITS)
    assert {s.contrast for s in specs} == {"T1w", "T2w", "random"}
    assert any(s.extra_lumbar for s in specs) and any(s.missing_disc for s in specs)
    for s in specs:
        thin = {"sagittal": "LR", "coronal": "PA", "axial": "IS"}.get(s.plane)
        if thin:
            assert s.orientation[2] in thin  # the slice axis is the third voxel axis


def test_sacral_remnant_discs_lie_across_the_sacral_bodies_and_train_as_sacrum(lib):
    from totalspineseg.synth import composite

    plain = composite.build_composite(lib, np.random.default_rng(9), context=False)
    assert not (plain.labels == composite.SACRAL_REMNANT).any()
    comp = composite.build_composite(lib, np.random.default_rng(9), context=False, sacral_remnants=2)
    remnant = comp.labels == composite.SACRAL_REMNANT
    s = np.nonzero(remnant.any(axis=(0, 1)))[0]
    top, bottom = comp.body_span[L.SACRUM]
    assert top + 15 < s.min() and s.max() < top + 70 and s.max() < bottom  # S1-S2 and S2-S3, inside the sacrum
    levels = np.unique(s)
    assert np.diff(levels).max() > 10  # two separate slabs, not one band
    v = np.nonzero(remnant.any(axis=(0, 2)))[0]
    assert v.min() > comp.centre[1]  # in front of the canal: the bodies, not the arch
    # Same bone, same place: only former sacrum voxels changed, and training sees them as sacrum again.
    changed = comp.labels != plain.labels
    assert np.isin(plain.labels[changed & remnant], [L.SACRUM]).all()
    train = composite.context_to_zero(comp.labels)
    assert not (train == composite.SACRAL_REMNANT).any()
    assert (train == L.SACRUM).sum() == (comp.labels == L.SACRUM).sum() + remnant.sum()


def test_remnants_are_disc_like_in_t2w_intensities():
    from totalspineseg.synth import composite, synthseg

    lab = np.full((30, 30, 30), L.SACRUM, np.uint8)
    lab[:, :, 14:17] = composite.SACRAL_REMNANT
    for seed in range(5):
        img = synthseg.synth_intensities(lab, np.ones(3), "T2w", np.random.default_rng(seed))
        remnant, bone = img[8:22, 8:22, 15].mean(), img[8:22, 8:22, 5].mean()
        assert remnant > bone + 0.1  # a bright band across the sacrum, as S1-S2 is on T2w


def test_synthetic_versions_keep_stage_one_draws_and_add_remnants_and_texture():
    from totalspineseg.synth import synthseg

    # Version 1 draws exactly what lite stage 1 was trained on (recorded from that day's code).
    assert synthseg.draw_spec(5, version=1) == synthseg.SynthSpec(
        5, "thoracolumbar", "sagittal", "IAL", (0.85, 0.85, 4.4), 9.5, False, None, "random")
    v1 = [synthseg.draw_spec(i, version=1) for i in range(300)]
    v2 = [synthseg.draw_spec(i, version=2) for i in range(300)]
    assert all(a.sacral_remnants == 0 and a.texture_sd == 0 for a in v1)
    assert [(a.fov, a.plane, a.voxel) for a in v1] == [(b.fov, b.plane, b.voxel) for b in v2]  # same geometry
    remnants = np.array([s.sacral_remnants for s in v2])
    assert 0.75 < (remnants > 0).mean() < 0.95 and set(remnants.tolist()) == {0, 1, 2}
    assert 0.6 < np.mean([s.texture_sd > 0 for s in v2]) < 0.8
    t2w = np.mean([s.contrast == "T2w" for s in v2]) - np.mean([s.contrast == "T2w" for s in v1])
    assert t2w > 0.03  # more T2w-like images in version 2
    with pytest.raises(ValueError, match="version"):
        synthseg.draw_spec(1, version=3)
