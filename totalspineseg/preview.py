"""QC preview images: a curved mid-sagittal panel through the spinal canal plus a strip of axial thumbnails.

Arrays are in canonical RAS+ voxel order (axis 0 toward Right, 1 toward Anterior, 2 toward Superior).
Every label is drawn in its fixed colour from `labels.colour_lut()`, so a colour means the same structure
in every subject. Slices are drawn with `imshow` and an extent in millimetres, never resampled to screen
pixels, so a huge volume costs no more memory than its own slices.

Display conventions: sagittal with superior up and anterior on the left; axial thumbnails in radiological
view (patient right on the viewer's left, anterior up). Both are written on the figure.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from . import labels as L
from .fsutil import atomic_write
from .geometry import Centerline
from .resample import voxel_sizes

__all__ = [
    "render_preview",
    "render_preview_bytes",
    "sagittal_index",
    "sagittal_path",
    "overlay_rgb",
    "intensity_window",
    "tags_for",
]

_DPI = 100
_MAX_HEIGHT_PX = 1800
_MIN_HEIGHT_PX = 420
_MIN_WIDTH_PX = 320
_TAG_PT = 8.0
_CAPTION_PT = 9.0
_N_AXIAL = 8
_AXIAL_MARGIN_MM = 20.0
_BACKGROUND = "#101014"
_TEXT = "#e8e8e8"

_COLOURS = L.colour_lut().astype(np.float32) / 255.0
_KNOWN = np.zeros(256, dtype=bool)
_KNOWN[list(L.FINAL)] = True
_TAGGABLE = np.array([L.is_vertebra(v) or L.is_disc(v) for v in range(256)])
_UNNUMBERED = (L.VERTEBRA_UNNUMBERED, L.DISC_UNNUMBERED)


# ---------------------------------------------------------------------------------------------------------
# Slice choice and colours


def sagittal_index(seg: np.ndarray | None, shape: tuple[int, ...] | None = None) -> int:
    """x index of the spinal canal: median x of canal/cord voxels, else the x with most labels, else the middle."""
    if seg is None:
        return (shape[0] - 1) // 2 if shape else 0
    canal = np.isin(seg, (L.CANAL, L.CORD))
    if canal.any():
        return int(np.median(np.nonzero(canal)[0]))
    per_x = np.count_nonzero(seg.reshape(seg.shape[0], -1), axis=1)
    if per_x.any():
        return int(np.argmax(per_x))
    return (seg.shape[0] - 1) // 2


def sagittal_path(seg: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """x index per z along the canal centreline (curved mid-sagittal); constant where there is no canal."""
    nx, nz = shape[0], shape[2]
    canal = None if seg is None else np.isin(seg, (L.CANAL, L.CORD))
    if canal is None or not canal.any():
        return np.full(nz, sagittal_index(seg, shape), dtype=np.intp)
    line = Centerline(canal)
    x = np.interp(np.arange(nz), line.z, line.x)
    return np.clip(np.rint(x), 0, nx - 1).astype(np.intp)


def intensity_window(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Robust display window (percentiles), computed on a strided subsample of at most ~1 M voxels."""
    step = max(1, int(round((image.size / 1e6) ** (1 / 3))))
    sample = np.asarray(image[::step, ::step, ::step] if image.ndim == 3 else image, dtype=np.float32)
    lo, hi = np.percentile(sample, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _grey(image_slice: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.clip((np.asarray(image_slice, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def overlay_rgb(grey: np.ndarray, seg_slice: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """RGB in [0, 1]: `grey` (already in [0, 1]) with every known label blended in its fixed colour.

    Background (0) and values outside the label table stay plain grey.
    """
    rgb = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=-1)
    if seg_slice is None:
        return rgb
    values = np.clip(np.asarray(seg_slice), 0, 255).astype(np.intp)
    labelled = _KNOWN[values] & (values > 0)
    rgb[labelled] = (1.0 - alpha) * rgb[labelled] + alpha * _COLOURS[values[labelled]]
    return rgb


# ---------------------------------------------------------------------------------------------------------
# Tags


def tags_for(seg: np.ndarray | None) -> list[tuple[int, str]]:
    """(value, short name) of every vertebra, sacrum and disc label present, in label order."""
    if seg is None:
        return []
    return _tags_from_counts(np.bincount(np.clip(seg, 0, 255).ravel().astype(np.intp), minlength=256))


def _tags_from_counts(counts: np.ndarray) -> list[tuple[int, str]]:
    return [(int(v), L.FINAL[int(v)].short) for v in np.flatnonzero(counts) if _TAGGABLE[v]]


@dataclass
class _Tag:
    text: str
    colour: tuple[float, float, float]
    z: float  # target height, mm
    anchor: float | None  # horizontal display position (mm) of the structure's edge, None if off-slice
    right: bool  # vertebrae on the right (posterior) side, discs and levels on the left


def _edge(mask2d: np.ndarray, z_row: int, u: np.ndarray, right: bool) -> float:
    """Display position of the structure's outer edge at (or nearest to) row `z_row`."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    row = rows[np.argmin(np.abs(rows - z_row))]
    cols = u[mask2d[row]]
    return float(cols.max() if right else cols.min())


def _counts_per_z(seg: np.ndarray) -> np.ndarray:
    """(nz, 256) voxel count of every label value in every axial slice."""
    return np.stack([np.bincount(np.clip(seg[:, :, z], 0, 255).ravel().astype(np.intp), minlength=256)
                     for z in range(seg.shape[2])])


def _structure_tags(seg, per_z, path, u, dz) -> list[_Tag]:
    """One tag per numbered label, one per connected piece of an unnumbered label."""
    zi = np.arange(seg.shape[2])
    on_slice = seg[path, :, zi]
    tags = []
    for value, text in _tags_from_counts(per_z.sum(axis=0)):
        if value in _UNNUMBERED:
            pieces, n = ndimage.label(seg == value)
            centres = ndimage.center_of_mass(pieces > 0, pieces, range(1, n + 1))
            slice_pieces = pieces[path, :, zi]
            items = [(slice_pieces == k, c[2]) for k, c in enumerate(centres, 1)]
        else:
            count = per_z[:, value]
            items = [(on_slice == value, float(count @ zi / count.sum()))]
        right = L.is_vertebra(value)
        tags += [_tag(text, value, mask, z, u, dz, right) for mask, z in items]
    return tags


def _tag(text, value, mask2d, volume_z, u, dz, right) -> _Tag:
    """Tag at the centroid height on the displayed slice, or at the volume centroid if not on it."""
    colour = tuple(0.55 * _COLOURS[value] + 0.45)  # lightened: legible on the dark outline
    if mask2d.any():
        z_row = float(np.nonzero(mask2d)[0].mean())
        return _Tag(text, colour, z_row * dz, _edge(mask2d, int(round(z_row)), u, right), right)
    return _Tag(text, colour, volume_z * dz, None, right)


def _level_tags(levels, u, dz) -> tuple[list[_Tag], list[tuple[float, float]]]:
    """Tags and (display u, z mm) marker positions for single-voxel level points."""
    tags, markers = [], []
    for x, y, z in np.argwhere(levels > 0):
        value = int(levels[x, y, z])
        pos = (float(u[y]), z * dz)
        markers.append(pos)
        tags.append(_Tag(L.LEVEL_NAMES.get(value, str(value)), (1.0, 1.0, 1.0), pos[1], pos[0], False))
    return tags, markers


def _spread(targets: np.ndarray, gap: float, lo: float, hi: float) -> np.ndarray:
    """Positions closest (least squares) to sorted `targets`, at least `gap` apart, kept within [lo, hi].

    Shifting by i*gap turns the spacing constraint into monotonicity: pool-adjacent-violators solves it.
    """
    n = targets.size
    if n == 0:
        return targets
    shifted = targets - gap * np.arange(n)
    blocks: list[list[float]] = []  # [sum, count]
    for t in shifted:
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    fitted = np.concatenate([np.full(c, s / c) for s, c in blocks])
    pos = fitted + gap * np.arange(n)
    span = pos[-1] - pos[0]
    if span > hi - lo:  # does not fit: compress evenly over the whole height
        return np.linspace(lo, hi, n)
    shift = max(lo - pos[0], 0.0) + min(hi - pos[-1], 0.0)
    return pos + shift


# ---------------------------------------------------------------------------------------------------------
# Layout


@dataclass
class _Layout:
    width: int
    height: int
    sag: tuple[float, float, float, float]  # left, bottom, width, height in pixels
    thumbs: list[tuple[float, float, float, float]]
    cells: int  # thumbnail grid size (columns x rows), may exceed len(thumbs)


def _thumb_grid(n, area_w, area_h, aspect, caption_px):
    """Columns, thumbnail width and height maximising the thumbnail size; aspect = width / height."""
    best = (1, 0.0, 0.0)
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        cell_w, cell_h = area_w / cols - 14, area_h / rows - caption_px - 8
        if cell_w <= 0 or cell_h <= 0:
            continue
        w = min(cell_w, cell_h * aspect)
        if w > best[1]:
            best = (cols, w, w / aspect)
    return best


def _layout(width_px, sag_aspect, thumb_aspect, n_thumbs, left_px, right_px) -> _Layout:
    """Pixel layout: title on top, sagittal panel on the left (with tag margins), thumbnails on the right.

    The height follows the sagittal aspect ratio, capped at `_MAX_HEIGHT_PX`; the sagittal panel takes at
    most 60 % of the usable width when there are thumbnails.
    """
    title_px, bottom_px, gap_px, pad_px = 58.0, 14.0, 28.0, 12.0
    usable_w = width_px - left_px - right_px - gap_px - pad_px
    sag_w = min((_MAX_HEIGHT_PX - title_px - bottom_px) * sag_aspect, usable_w * (0.6 if n_thumbs else 1.0))
    sag_h = sag_w / sag_aspect
    height = int(round(max(sag_h + title_px + bottom_px, _MIN_HEIGHT_PX)))
    body_h = height - title_px - bottom_px
    sag = (left_px, bottom_px + (body_h - sag_h) / 2, sag_w, sag_h)
    area_x = left_px + sag_w + right_px + gap_px
    area = (area_x, bottom_px, width_px - area_x - pad_px, body_h - 20)
    thumbs, cells = _thumb_boxes(n_thumbs, area, thumb_aspect)
    return _Layout(int(width_px), height, sag, thumbs, cells)


def _thumb_boxes(n, area, aspect):
    """Boxes of `n` thumbnails in a grid filling `area` (x, y, w, h), and the grid size."""
    if n == 0:
        return [], 0
    x0, y0, area_w, area_h = area
    caption_px = 22.0
    cols, tw, th = _thumb_grid(n, area_w, area_h, aspect, caption_px)
    if tw <= 0:
        return [], 0
    rows = -(-n // cols)
    cell_w, cell_h = area_w / cols, min(area_h / rows, th + caption_px + 16)
    top = y0 + (area_h + rows * cell_h) / 2  # the grid is centred vertically in the area
    boxes = []
    for i in range(n):
        r, c = divmod(i, cols)
        boxes.append((x0 + c * cell_w + (cell_w - tw) / 2, top - (r + 1) * cell_h + (cell_h - caption_px - th) / 2,
                      tw, th))
    return boxes, rows * cols


# ---------------------------------------------------------------------------------------------------------
# Axial strip


def _axial_candidates(per_z, levels) -> list[tuple[float, str]]:
    """(z index, name) of the structures an axial slice may be centred on, bottom to top."""
    if per_z is not None:
        zi = np.arange(per_z.shape[0])
        out = [(float(per_z[:, v] @ zi / per_z[:, v].sum()), text) for v, text in _tags_from_counts(per_z.sum(0))]
    elif levels is not None:
        out = [(float(z), L.LEVEL_NAMES.get(int(levels[x, y, z]), "?")) for x, y, z in np.argwhere(levels > 0)]
    else:
        out = []
    return sorted(out)


def _axial_heights(candidates, per_z, nz, n) -> list[tuple[int, str]]:
    """(z index, caption) of up to `n` axial slices, top to bottom, spread over the labelled spine."""
    if candidates and len(candidates) >= min(n, 4):
        pick = np.unique(np.linspace(0, len(candidates) - 1, min(n, len(candidates))).round().astype(int))
        return [(int(round(candidates[i][0])), candidates[i][1]) for i in pick[::-1]]
    labelled = np.flatnonzero(per_z[:, 1:].sum(axis=1)) if per_z is not None else np.zeros(0, int)
    lo, hi = (labelled[0], labelled[-1]) if labelled.size else (0, nz - 1)
    heights = np.unique(np.linspace(lo, hi, n + 2)[1:-1].round().astype(int))
    return [(int(z), _dominant(per_z, z)) for z in heights[::-1]]


def _dominant(per_z, z: int) -> str:
    """Short name of the most frequent vertebra or disc in slice z."""
    if per_z is not None:
        counts = np.where(_TAGGABLE, per_z[z], 0)
        if counts.any():
            return L.FINAL[int(np.argmax(counts))].short
    return f"z = {z}"


def _axial_crop(seg, spacing) -> tuple[slice, slice]:
    """x and y ranges shared by every thumbnail: the labelled region plus a margin, or everything."""
    if seg is None or not seg.any():
        return slice(None), slice(None)
    crop = []
    for axis, other in ((0, (1, 2)), (1, (0, 2))):
        idx = np.flatnonzero(seg.any(axis=other))
        m = int(np.ceil(_AXIAL_MARGIN_MM / spacing[axis]))
        crop.append(slice(max(idx[0] - m, 0), min(idx[-1] + m + 1, seg.shape[axis])))
    return tuple(crop)


# ---------------------------------------------------------------------------------------------------------
# Drawing


def _text(ax, x, y, s, size, colour=_TEXT, **kw):
    outline = [patheffects.withStroke(linewidth=2.2, foreground="black")]
    return ax.text(x, y, s, fontsize=size, color=colour, path_effects=outline, clip_on=False, **kw)


def _draw_sagittal(ax, rgb, dy, dz, tags, markers, px_per_mm):
    ny = rgb.shape[1]
    w_mm, h_mm = ny * dy, rgb.shape[0] * dz
    ax.imshow(rgb[:, ::-1], origin="lower", extent=(0, w_mm, 0, h_mm), interpolation="antialiased")
    ax.set_xlim(0, w_mm)
    ax.set_ylim(0, h_mm)
    for u, z in markers:
        ax.plot(u, z, "o", ms=4.5, mfc="white", mec="black", mew=1.0, zorder=5)
    gap = (_TAG_PT * _DPI / 72 * 1.25) / px_per_mm
    tick = 6 / px_per_mm
    for right in (False, True):
        side = sorted((t for t in tags if t.right == right), key=lambda t: t.z)
        pos = _spread(np.array([t.z for t in side]), gap, gap / 2, h_mm - gap / 2)
        edge = w_mm if right else 0.0
        sign = 1 if right else -1
        for t, z in zip(side, pos, strict=False):
            xs = [edge, edge + sign * tick, edge + sign * 2 * tick]
            ys = [t.z, t.z, z]
            if t.anchor is not None:
                xs, ys = [t.anchor] + xs, [t.z] + ys
            ax.plot(xs, ys, color=t.colour, lw=0.7, alpha=0.8, clip_on=False, zorder=4)
            _text(ax, edge + sign * 2.4 * tick, z, t.text, _TAG_PT, t.colour, weight="bold",
                  ha="left" if right else "right", va="center")
    _orientation(ax, w_mm, h_mm, ("A", "P", "S", "I"))


def _orientation(ax, w, h, letters):
    """Orientation letters at the middle of each edge, left out where the panel is too small for them."""
    left, right, top, bottom = letters
    kw = dict(size=_CAPTION_PT, colour="#b0b0b0", weight="bold")
    if ax.bbox.width >= 60 and ax.bbox.height >= 40:
        _text(ax, 0.015 * w, h / 2, left, ha="left", va="center", **kw)
        _text(ax, 0.985 * w, h / 2, right, ha="right", va="center", **kw)
    if ax.bbox.height >= 60 and ax.bbox.width >= 40:
        _text(ax, w / 2, 0.985 * h, top, ha="center", va="top", **kw)
        _text(ax, w / 2, 0.015 * h, bottom, ha="center", va="bottom", **kw)


def _draw_axial(ax, rgb, dx, dy, caption, first):
    # rgb is (x, y, 3): rows -> y (anterior up with origin lower), columns -> x reversed (radiological)
    w_mm, h_mm = rgb.shape[0] * dx, rgb.shape[1] * dy
    ax.imshow(np.transpose(rgb, (1, 0, 2))[:, ::-1], origin="lower", extent=(0, w_mm, 0, h_mm),
              interpolation="antialiased")
    ax.set_xlim(0, w_mm)
    ax.set_ylim(0, h_mm)
    _text(ax, w_mm / 2, h_mm * 1.02, caption, _CAPTION_PT, weight="bold", ha="center", va="bottom")
    if first:
        _orientation(ax, w_mm, h_mm, ("R", "L", "A", ""))


def _new_axes(fig, layout, box):
    x, y, w, h = box
    ax = fig.add_axes((x / layout.width, y / layout.height, w / layout.width, h / layout.height))
    ax.set_axis_off()
    return ax


def _tag_margin_px(tags: list[_Tag], right: bool) -> float:
    texts = [t.text for t in tags if t.right == right]
    if not texts:
        return 24.0
    return 26.0 + max(map(len, texts)) * _TAG_PT * 0.68 * _DPI / 72


@dataclass
class _Scene:
    """Everything the figure shows, computed from the arrays before any drawing."""

    sagittal: np.ndarray  # (nz, ny, 3) RGB
    tags: list[_Tag]
    markers: list[tuple[float, float]]
    spacing: np.ndarray
    curved: bool
    window: tuple[float, float]
    per_z: np.ndarray | None  # label counts per axial slice
    candidates: list[tuple[float, str]]  # heights the axial thumbnails may show
    crop: tuple[slice, slice]  # x, y range of the axial thumbnails


def _sagittal_path(seg, levels, shape) -> np.ndarray:
    if seg is None and levels is not None and levels.any():
        return np.full(shape[2], int(np.median(np.nonzero(levels)[0])), dtype=np.intp)
    return sagittal_path(seg, shape)


def _scene(image, seg, affine, levels, tags, alpha) -> _Scene:
    ny, nz = image.shape[1:]
    spacing = voxel_sizes(affine)
    dy, dz = spacing[1], spacing[2]
    window = intensity_window(image)
    path = _sagittal_path(seg, levels, image.shape)
    zi = np.arange(nz)
    u = (ny - 1 - np.arange(ny)) * dy + dy / 2  # display position of each y column: anterior on the left
    per_z = None if seg is None else _counts_per_z(seg)

    sagittal = overlay_rgb(_grey(image[path, :, zi], window), None if seg is None else seg[path, :, zi], alpha)
    tag_list = _structure_tags(seg, per_z, path, u, dz) if (tags and seg is not None) else []
    markers = []
    if levels is not None and levels.any():
        level_tags, markers = _level_tags(levels, u, dz)
        named = {t.text for t in tag_list}
        tag_list += [t for t in level_tags if t.text not in named]

    curved = seg is not None and bool(per_z[:, [L.CANAL, L.CORD]].any())
    candidates = _axial_candidates(per_z, levels)
    crop = _axial_crop(seg, spacing)
    return _Scene(sagittal, tag_list, markers, spacing, curved, window, per_z, candidates, crop)


def _plan(scene: _Scene, image_shape, width_px) -> tuple[_Layout, list[tuple[int, str]]]:
    """Figure layout and axial heights; a partly empty last grid row is filled when there is material."""
    dx, dy, dz = scene.spacing
    nz, ny = scene.sagittal.shape[:2]
    cx, cy = (len(range(*c.indices(n))) for c, n in zip(scene.crop, image_shape, strict=False))
    margins = _tag_margin_px(scene.tags, False), _tag_margin_px(scene.tags, True)

    def layout_for(n_thumbs):
        return _layout(width_px, ny * dy / (nz * dz), cx * dx / (cy * dy), n_thumbs, *margins)

    heights = _axial_heights(scene.candidates, scene.per_z, nz, _N_AXIAL)
    layout = layout_for(len(heights))
    if layout.cells > len(heights) == _N_AXIAL:
        more = _axial_heights(scene.candidates, scene.per_z, nz, layout.cells)
        if len(more) == layout.cells:
            heights, layout = more, layout_for(len(more))
    return layout, heights


def _check_inputs(image, seg, levels, width_px) -> None:
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"preview needs a non-empty 3-D image, got shape {image.shape}")
    for name, arr in (("segmentation", seg), ("levels", levels)):
        if arr is not None and arr.shape != image.shape:
            raise ValueError(f"{name} shape {arr.shape} differs from image shape {image.shape}")
    if width_px < _MIN_WIDTH_PX:
        raise ValueError(f"width_px must be at least {_MIN_WIDTH_PX}, got {width_px}")


def _build_figure(image, seg, affine, title, levels, tags, alpha, width_px) -> Figure:
    image = np.asarray(image)
    seg = None if seg is None else np.asarray(seg)
    levels = None if levels is None else np.asarray(levels)
    _check_inputs(image, seg, levels, width_px)
    scene = _scene(image, seg, affine, levels, tags, alpha)
    layout, heights = _plan(scene, image.shape, width_px)
    dx, dy, dz = scene.spacing

    fig = Figure(figsize=(layout.width / _DPI, layout.height / _DPI), dpi=_DPI, facecolor=_BACKGROUND)
    FigureCanvasAgg(fig)
    px_per_mm = layout.sag[3] / (image.shape[2] * dz)
    _draw_sagittal(_new_axes(fig, layout, layout.sag), scene.sagittal, dy, dz, scene.tags, scene.markers, px_per_mm)
    for i, ((z, caption), box) in enumerate(zip(heights, layout.thumbs, strict=False)):
        block = scene.crop + (z,)
        rgb = overlay_rgb(_grey(image[block], scene.window), None if seg is None else seg[block], alpha)
        _draw_axial(_new_axes(fig, layout, box), rgb, dx, dy, caption, i == 0)
    _titles(fig, layout, title, scene.spacing, scene.curved)
    return fig


def _titles(fig, layout, title, spacing, curved):
    x0 = 12 / layout.width
    kind = "curved mid-sagittal along the canal" if curved else "mid-sagittal"
    sub = (f"Left: {kind} (A left, S up).  Right: axial slices, radiological (R left, A up).  "
           f"Voxel {spacing[0]:.2g} x {spacing[1]:.2g} x {spacing[2]:.2g} mm")
    fig.text(x0, 1 - 8 / layout.height, title or "TotalSpineSeg preview", fontsize=13, weight="bold",
             color=_TEXT, ha="left", va="top")
    fig.text(x0, 1 - 32 / layout.height, sub, fontsize=8.5, color="#a0a0a8", ha="left", va="top")


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def _encode(fig: Figure, fmt: str) -> bytes:
    # The figure belongs to no pyplot registry: dropping the reference frees it.
    buf = io.BytesIO()
    kwargs = {"pil_kwargs": {"quality": 90}} if fmt == "jpeg" else {}
    fig.savefig(buf, format=fmt, dpi=_DPI, facecolor=fig.get_facecolor(), **kwargs)
    return buf.getvalue()


def render_preview(image: np.ndarray, seg: np.ndarray | None, affine: np.ndarray, out_path, *,
                   title: str = "", levels: np.ndarray | None = None, tags: bool = True,
                   alpha: float = 0.45, width_px: int = 1600) -> Path:
    """Write a QC preview (JPEG, or PNG when `out_path` ends in .png) atomically and return its path.

    `image` and `seg` (final label scheme, or None) are canonical RAS+ arrays on the grid of `affine`;
    `levels` holds single-voxel level points (`labels.LEVEL_NAMES`), drawn as named markers.
    """
    out_path = Path(out_path)
    fmt = "png" if out_path.suffix.lower() == ".png" else "jpeg"
    data = render_preview_bytes(image, seg, affine, fmt=fmt, title=title, levels=levels, tags=tags,
                                alpha=alpha, width_px=width_px)
    atomic_write(out_path, data)
    return out_path


def render_preview_bytes(image: np.ndarray, seg: np.ndarray | None, affine: np.ndarray, *, fmt: str = "jpeg",
                         title: str = "", levels: np.ndarray | None = None, tags: bool = True,
                         alpha: float = 0.45, width_px: int = 1600) -> bytes:
    """The same figure as `render_preview`, encoded in memory ("jpeg" or "png"), e.g. for an HTML report."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    return _encode(_build_figure(image, seg, affine, title, levels, tags, alpha, width_px), fmt)
