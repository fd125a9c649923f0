"""QC previews: slice choice, fixed colours, tag placement, robustness and atomic output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from totalspineseg import labels as L
from totalspineseg import preview as P

SHAPE = (40, 50, 120)
CANAL_X = 27  # off the x-centre (20) on purpose: the sagittal slice must follow the canal


def _spine(shape=SHAPE, canal_x=CANAL_X, vertebrae=(41, 42, 43, 44)):
    """Stacked vertebra boxes with discs between them, anterior (higher y) to a canal tube holding the cord."""
    seg = np.zeros(shape, np.uint8)
    z = 8
    for i, v in enumerate(vertebrae):
        seg[canal_x - 8 : canal_x + 9, 30:44, z : z + 18] = v
        z += 18
        if i + 1 < len(vertebrae):
            seg[canal_x - 7 : canal_x + 8, 31:43, z : z + 5] = L.disc_below_vertebra(v)
            z += 5
    seg[canal_x - 3 : canal_x + 4, 20:28, :] = L.CANAL
    seg[canal_x - 1 : canal_x + 2, 22:26, :] = L.CORD
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, shape).astype(np.float32) + 50 * (seg > 0)
    return image, seg, np.eye(4)


def _decode(path_or_bytes) -> Image.Image:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    im = Image.open(src)
    im.load()
    return im


# ---------------------------------------------------------------------------------------------------------
# Slice choice


def test_sagittal_index_follows_canal():
    _, seg, _ = _spine()
    assert P.sagittal_index(seg) == CANAL_X
    assert np.all(P.sagittal_path(seg, seg.shape) == CANAL_X)


def test_curved_path_follows_a_scoliotic_canal():
    seg = np.zeros(SHAPE, np.uint8)
    centre = np.round(12 + 16 * np.sin(np.linspace(0, np.pi, SHAPE[2]))).astype(int)
    for z, x in enumerate(centre):
        seg[x - 2 : x + 3, 20:26, z] = L.CANAL
    path = P.sagittal_path(seg, SHAPE)
    assert path.shape == (SHAPE[2],)
    assert np.max(np.abs(path - centre)[10:-10]) <= 1


def test_sagittal_index_fallbacks():
    seg = np.zeros(SHAPE, np.uint8)
    assert P.sagittal_index(seg) == (SHAPE[0] - 1) // 2
    assert P.sagittal_index(None, SHAPE) == (SHAPE[0] - 1) // 2
    seg[5:8, 10:40, 10:100] = 42  # no canal: the x with the most labelled voxels
    seg[6, 0:50, 0:120] = 42
    assert P.sagittal_index(seg) == 6


# ---------------------------------------------------------------------------------------------------------
# Colours


def test_overlay_blends_fixed_label_colour():
    grey = np.full((3, 4), 0.5, np.float32)
    seg = np.zeros((3, 4), np.uint8)
    seg[1, 2] = 42
    rgb = P.overlay_rgb(grey, seg, alpha=0.4)
    expected = 0.6 * 0.5 + 0.4 * np.array(L.FINAL[42].colour) / 255
    np.testing.assert_allclose(rgb[1, 2], expected, atol=1e-6)
    np.testing.assert_allclose(rgb[0, 0], [0.5, 0.5, 0.5])  # background stays grey


def test_unknown_label_values_stay_grey():
    grey = np.full((1, 2), 0.3, np.float32)
    rgb = P.overlay_rgb(grey, np.array([[3, 255]]), alpha=0.5)
    np.testing.assert_allclose(rgb, 0.3)


def test_colour_does_not_depend_on_the_label_set():
    """Pain point 13: the same value has the same colour whatever else the subject contains."""
    grey = np.full((2, 3), 0.2, np.float32)
    few = np.array([[42, 0, 0], [0, 0, 0]])
    many = np.array([[42, 11, 100], [L.VERTEBRA_UNNUMBERED, 63, L.CORD]])
    np.testing.assert_array_equal(P.overlay_rgb(grey, few)[0, 0], P.overlay_rgb(grey, many)[0, 0])


def test_rendered_panel_is_tinted_with_the_label_colour():
    """Same figure for two volumes with different label sets: the pixel over L2 has the same tint."""
    image, seg, affine = _spine()
    image[:] = 100.0
    colours = []
    for vertebrae in ((41, 42, 43, 44), (42, 43)):
        _, s, _ = _spine(vertebrae=vertebrae)
        scene = P._scene(image, s, affine, None, True, 0.45)
        z = int(np.mean(np.nonzero(s[CANAL_X, 36] == 42)[0]))
        colours.append(scene.sagittal[z, 36])
    np.testing.assert_allclose(colours[0], colours[1])
    assert not np.allclose(colours[0], colours[0][0])  # tinted, not grey


# ---------------------------------------------------------------------------------------------------------
# Tags


def test_tags_for_lists_vertebrae_and_discs():
    _, seg, _ = _spine()
    seg[0:2, 0:2, 0:2] = L.VERTEBRA_UNNUMBERED
    tags = dict(P.tags_for(seg))
    assert tags[42] == "L2" and tags[92] == "L1-L2"
    assert "?" in tags[L.VERTEBRA_UNNUMBERED]
    assert L.CANAL not in tags and L.CORD not in tags
    assert P.tags_for(None) == []


def test_structure_tags_sides_and_off_slice_centroid():
    image, seg, affine = _spine()
    seg[2:5, 2:6, 100:110] = L.DISC_UNNUMBERED  # far from the displayed slice
    seg[2:5, 2:6, 60:70] = L.DISC_UNNUMBERED  # a second, separate piece
    scene = P._scene(image, seg, affine, None, True, 0.45)
    by_text = {}
    for t in scene.tags:
        by_text.setdefault(t.text, []).append(t)
    assert by_text["L1"][0].right and not by_text["L1-L2"][0].right
    unnumbered = sorted(by_text[L.FINAL[L.DISC_UNNUMBERED].short], key=lambda t: t.z)
    assert [t.z for t in unnumbered] == pytest.approx([64.5, 104.5])
    assert all(t.anchor is None for t in unnumbered)


def test_spread_separates_close_tags_and_keeps_order():
    targets = np.array([10.0, 10.5, 11.0, 50.0, 99.0])
    pos = P._spread(targets, gap=4.0, lo=0.0, hi=100.0)
    assert np.all(np.diff(pos) >= 4.0 - 1e-9)
    assert pos[0] >= 0 and pos[-1] <= 100
    assert abs(pos[3] - 50.0) < 1e-9  # untouched when far from the others
    assert abs(pos[1] - 10.5) < 1e-9  # a cluster stays centred on its targets


def test_levels_are_marked_even_off_the_displayed_slice():
    image, seg, affine = _spine()
    levels = np.zeros(SHAPE, np.uint8)
    levels[5, 28, 30] = 21  # x = 5 is far from the canal slice
    scene = P._scene(image, seg, affine, levels, True, 0.45)
    assert len(scene.markers) == 1
    assert scene.markers[0][1] == pytest.approx(30.0)
    assert L.LEVEL_NAMES[21] in {t.text for t in scene.tags}


# ---------------------------------------------------------------------------------------------------------
# Rendering


def test_render_writes_a_decodable_jpeg_of_the_requested_width(tmp_path):
    image, seg, affine = _spine()
    out = P.render_preview(image, seg, affine, tmp_path / "sub-01_preview.jpg", title="sub-01", width_px=800)
    im = _decode(out)
    assert im.format == "JPEG"
    assert abs(im.size[0] - 800) <= 2
    assert im.size[1] <= 1800
    assert [p.name for p in tmp_path.iterdir()] == ["sub-01_preview.jpg"]  # no temporary file left


def test_preview_is_readable_like_other_outputs(tmp_path):
    import os
    import stat

    image, seg, affine = _spine()
    old = os.umask(0o022)
    try:
        out = P.render_preview(image, seg, affine, tmp_path / "p.jpg", width_px=400)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_render_bytes_png_and_jpeg():
    image, seg, affine = _spine()
    png = P.render_preview_bytes(image, seg, affine, fmt="png", width_px=400)
    jpg = P.render_preview_bytes(image, seg, affine, width_px=400)
    assert png.startswith(b"\x89PNG") and jpg.startswith(b"\xff\xd8")
    assert _decode(png).size[0] == 400
    with pytest.raises(ValueError):
        P.render_preview_bytes(image, seg, affine, fmt="gif")


def test_long_volume_height_is_capped(tmp_path):
    image, seg, affine = _spine(shape=(20, 30, 600))
    im = _decode(P.render_preview(image, seg, affine, tmp_path / "long.jpg", width_px=500))
    assert im.size[1] <= 1800


def _cases():
    image, seg, affine = _spine()
    aniso = np.diag([3.0, 0.8, 0.8, 1.0])
    canal_only = np.where(np.isin(seg, (L.CANAL, L.CORD)), seg, 0).astype(np.uint8)
    tiny = np.zeros((10, 10, 10), np.uint8)
    tiny[4:6, 4:6, :] = L.CANAL
    tiny[2:8, 6:9, 2:5] = 42
    thin = seg[CANAL_X : CANAL_X + 1]
    levels = np.zeros(SHAPE, np.uint8)
    levels[CANAL_X, 28, [30, 60]] = [20, 21]
    return {
        "empty seg": (image, np.zeros_like(seg), affine, None),
        "no seg": (image, None, affine, None),
        "levels only": (image, None, affine, levels),
        "canal and cord only": (image, canal_only, affine, None),
        "tiny": (np.random.default_rng(1).random((10, 10, 10)), tiny, affine, None),
        "single sagittal slice": (image[CANAL_X : CANAL_X + 1], thin, affine, None),
        "single axial slice": (image[:, :, 40:41], seg[:, :, 40:41], affine, None),
        "constant image": (np.zeros(SHAPE, np.float32), seg, affine, None),
        "float labels": (image, seg.astype(np.float64), affine, None),
        "anisotropic": (image, seg, aniso, levels),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_edge_cases_do_not_crash(case, tmp_path):
    image, seg, affine, levels = _cases()[case]
    out = P.render_preview(image, seg, affine, tmp_path / "p.jpg", levels=levels, width_px=480)
    assert _decode(out).size[0] == 480


def test_tags_off_and_alpha_zero(tmp_path):
    image, seg, affine = _spine()
    out = P.render_preview(image, seg, affine, tmp_path / "p.png", tags=False, alpha=0.0, width_px=400)
    assert _decode(out).format == "PNG"


def test_bad_inputs_raise(tmp_path):
    image, seg, affine = _spine()
    with pytest.raises(ValueError):
        P.render_preview(image, seg[:-1], affine, tmp_path / "p.jpg")
    with pytest.raises(ValueError):
        P.render_preview(image[0], None, affine, tmp_path / "p.jpg")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    image, seg, affine = _spine()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("totalspineseg.fsutil.os.replace", broken_replace)
    with pytest.raises(OSError):
        P.render_preview(image, seg, affine, tmp_path / "p.jpg", width_px=400)
    assert list(tmp_path.iterdir()) == []
