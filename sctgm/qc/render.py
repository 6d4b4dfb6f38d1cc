"""PNG mosaics of axial slices cropped around the cord, from canonical (LAS) arrays.

Display convention (radiological, as in SCT's QC and clinical viewers): each tile shows an axial
slice seen from the feet, the patient's Right on the viewer's left, Anterior at the top. The first
tile carries the letters A, P, R, L. Tiles run from the most inferior slice (top-left) to the most
superior one, each labelled with the slice's voxel index in the input file.

Two images are produced with the same geometry: the background (image, slice numbers, flagged
tiles framed in orange) and a transparent overlay (GM in red, WM in blue) that the report stacks on
top and toggles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Width of one tile in the mosaic (pixels).
TILE_PX = 150
#: Tiles per mosaic row.
MAX_COLS = 8
#: At most this many slices are drawn (evenly subsampled, flagged slices always kept).
MAX_TILES = 48
GAP_PX = 2
GM_RGBA = (255, 40, 40, 150)
WM_RGBA = (40, 130, 255, 90)
FLAG_RGB = (255, 150, 0)
LABEL_RGB = (255, 230, 0)


@dataclass(frozen=True)
class CropPlan:
    """A square (in mm) in-plane window per axial slice, centred on the cord.

    ``centers_vox[k]`` is the (x, y) centre on canonical slice ``k``; the window is
    ``size_vox`` = (nx, ny) voxels and may extend past the image (padded with zeros).
    """

    size_vox: tuple[int, int]
    centers_vox: np.ndarray  # (nz, 2) float

    def box(self, k: int) -> tuple[int, int]:
        """(x0, y0): the window's first voxel on slice ``k``."""
        cx, cy = self.centers_vox[k]
        nx, ny = self.size_vox
        return int(round(cx - (nx - 1) / 2)), int(round(cy - (ny - 1) / 2))


@dataclass(frozen=True)
class Mosaic:
    """Encoded PNGs and where each slice's tile lies in them (pixels)."""

    background_png: bytes
    overlay_png: bytes
    width: int
    height: int
    tiles: list[dict[str, int]] = field(default_factory=list)  # {"slice", "x", "y", "w", "h"}


def plan_crop(reference: np.ndarray, zooms_mm: tuple[float, float, float], *, is_cord: bool) -> CropPlan:
    """Crop windows around ``reference`` (a boolean canonical mask: the cord, else the GM).

    The window size is the median in-plane extent of the mask over its slices, enlarged (x1.5 for a
    cord mask, x2.2 for GM, which is narrower than the cord) plus 3 mm, kept within 16-80 mm. Centres
    follow the mask's centroid slice by slice (median of 5 slices, so one leaky slice does not
    move its own window). Without any mask: the whole slice.
    """
    nx, ny, nz = reference.shape
    zx, zy = float(zooms_mm[0]), float(zooms_mm[1])
    ks = [k for k in range(nz) if reference[:, :, k].any()]
    if not ks:
        centers = np.tile([(nx - 1) / 2, (ny - 1) / 2], (nz, 1)).astype(float)
        side_mm = max(nx * zx, ny * zy)
        return CropPlan((max(1, round(side_mm / zx)), max(1, round(side_mm / zy))), centers)
    extents, cents = [], []
    for k in ks:
        xs, ys = np.nonzero(reference[:, :, k])
        extents.append(max((xs.max() - xs.min() + 1) * zx, (ys.max() - ys.min() + 1) * zy))
        cents.append((xs.mean(), ys.mean()))
    factor = 1.5 if is_cord else 2.2
    side_mm = float(np.clip(np.median(extents) * factor + 6.0, 16.0, 80.0))
    size = (max(8, round(side_mm / zx)), max(8, round(side_mm / zy)))
    cents_arr = np.asarray(cents)
    smoothed = np.array([np.median(cents_arr[max(0, i - 2): i + 3], axis=0) for i in range(len(ks))])
    all_k = np.arange(nz)
    centers = np.stack([np.interp(all_k, ks, smoothed[:, 0]), np.interp(all_k, ks, smoothed[:, 1])], axis=1)
    return CropPlan(size, centers)


def crop_slice(arr2d: np.ndarray, x0: int, y0: int, size: tuple[int, int]) -> np.ndarray:
    """``arr2d[x0:x0+nx, y0:y0+ny]``, zero-padded where the window leaves the image."""
    nx, ny = size
    out = np.zeros((nx, ny), dtype=arr2d.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(arr2d.shape[0], x0 + nx), min(arr2d.shape[1], y0 + ny)
    if sx1 > sx0 and sy1 > sy0:
        out[sx0 - x0: sx1 - x0, sy0 - y0: sy1 - y0] = arr2d[sx0:sx1, sy0:sy1]
    return out


def touches_edge(mask2d: np.ndarray, x0: int, y0: int, size: tuple[int, int]) -> bool:
    """True when the mask reaches the crop window's edge: a voxel outside the window, or on the
    outer ring of the window's part inside the image (the image border counts as an edge)."""
    nx, ny = size
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(mask2d.shape[0], x0 + nx), min(mask2d.shape[1], y0 + ny)
    if sx1 <= sx0 or sy1 <= sy0:
        return bool(mask2d.any())
    inside = mask2d[sx0:sx1, sy0:sy1]
    if int(inside.sum()) != int(mask2d.sum()):
        return True
    return bool(inside[0, :].any() or inside[-1, :].any() or inside[:, 0].any() or inside[:, -1].any())


def to_display(c: np.ndarray) -> np.ndarray:
    """Canonical crop (x towards Left, y towards Anterior) -> display rows/cols in radiological
    convention: row 0 = most anterior, column 0 = patient's right."""
    return c.T[::-1, :]


def choose_slices(candidates: list[int], flagged: set[int], max_tiles: int = MAX_TILES) -> list[int]:
    """All ``candidates`` when few, else an even subsample that keeps every flagged slice."""
    if len(candidates) <= max_tiles:
        return list(candidates)
    keep = set(k for k in candidates if k in flagged)
    room = max(0, max_tiles - len(keep))
    if room:
        idx = np.linspace(0, len(candidates) - 1, room).round().astype(int)
        keep.update(candidates[i] for i in idx)
    return sorted(keep)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], s: str, font: ImageFont.ImageFont,
          fill: tuple[int, int, int], anchor: str) -> None:
    x, y = xy
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        draw.text((x + dx, y + dy), s, fill=(0, 0, 0), font=font, anchor=anchor)
    draw.text((x, y), s, fill=fill, font=font, anchor=anchor)


def render_mosaic(
    image: np.ndarray,
    gm: np.ndarray,
    plan: CropPlan,
    slices: list[int],
    zooms_mm: tuple[float, float, float],
    *,
    wm: np.ndarray | None = None,
    flagged: set[int] | None = None,
    slice_labels: dict[int, int] | None = None,
) -> Mosaic:
    """Draw ``slices`` (canonical indices) of ``image`` and the GM (and WM) masks as two PNGs.

    ``slice_labels`` maps a canonical slice to the number printed on its tile (the input file's
    voxel index); ``flagged`` slices get an orange frame.
    """
    flagged = flagged or set()
    slice_labels = slice_labels or {k: k for k in slices}
    nx, ny = plan.size_vox
    tile_w = TILE_PX
    tile_h = max(8, round(TILE_PX * (ny * zooms_mm[1]) / (nx * zooms_mm[0])))
    n = max(1, len(slices))
    rows = -(-n // MAX_COLS)
    cols = -(-n // rows)  # balanced rows: 9 tiles -> 2 rows of 5, not 8 + 1
    width, height = cols * tile_w + (cols - 1) * GAP_PX, rows * tile_h + (rows - 1) * GAP_PX

    crops = [crop_slice(image[:, :, k], *plan.box(k), plan.size_vox) for k in slices]
    stack = np.stack(crops) if crops else np.zeros((1, nx, ny), np.float32)
    nonzero = stack[stack != 0]
    values = nonzero if nonzero.size else stack.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5])) if values.size else (0.0, 1.0)
    if not hi > lo:  # in float64: a float32 lo + 1 can equal lo (values near 1e38)
        hi = lo + max(1.0, abs(lo) * 1e-6)

    bg = Image.new("RGB", (width, height), (0, 0, 0))
    ov = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(bg)
    small, letters = _font(12), _font(14)
    tiles: list[dict[str, int]] = []
    for i, (k, crop) in enumerate(zip(slices, crops)):
        x = (i % cols) * (tile_w + GAP_PX)
        y = (i // cols) * (tile_h + GAP_PX)
        grey = np.clip((to_display(crop) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        bg.paste(Image.fromarray(grey, "L").resize((tile_w, tile_h), Image.BILINEAR).convert("RGB"), (x, y))
        rgba = np.zeros((ny, nx, 4), dtype=np.uint8)
        if wm is not None:
            rgba[to_display(crop_slice(wm[:, :, k], *plan.box(k), plan.size_vox))] = WM_RGBA
        rgba[to_display(crop_slice(gm[:, :, k], *plan.box(k), plan.size_vox))] = GM_RGBA
        ov.paste(Image.fromarray(rgba, "RGBA").resize((tile_w, tile_h), Image.NEAREST), (x, y))
        _text(draw, (x + 4, y + 3), str(slice_labels.get(k, k)), small, LABEL_RGB, "la")
        if i == 0:
            _text(draw, (x + tile_w // 2, y + 3), "A", letters, (255, 255, 255), "ma")
            _text(draw, (x + tile_w // 2, y + tile_h - 3), "P", letters, (255, 255, 255), "md")
            _text(draw, (x + 4, y + tile_h // 2), "R", letters, (255, 255, 255), "lm")
            _text(draw, (x + tile_w - 4, y + tile_h // 2), "L", letters, (255, 255, 255), "rm")
        if k in flagged:
            draw.rectangle([x, y, x + tile_w - 1, y + tile_h - 1], outline=FLAG_RGB, width=3)
        tiles.append({"slice": int(k), "x": x, "y": y, "w": tile_w, "h": tile_h})
    return Mosaic(_png(bg), _png(ov), width, height, tiles)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # optimize=True: -12 % size for 5x the time
    return buf.getvalue()
