"""The QC report flags the slices a segmentation doubted (a sidecar's ``doubtful_slices``)."""

from __future__ import annotations

import numpy as np

from sctgm.qc import build_entry
from sctgm.qc import flags as F


def _phantom(nz: int = 6) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.mgrid[:40, :40]
    cord = ((x - 20) / 8) ** 2 + ((y - 20) / 6) ** 2 <= 1
    gm = ((x - 20) / 4) ** 2 + ((y - 20) / 3) ** 2 <= 1
    img = np.random.default_rng(0).normal(100, 5, (40, 40, nz)).astype(np.float32) + 200 * cord[..., None] \
        + 100 * gm[..., None]
    return img, np.repeat(gm[:, :, None], nz, axis=2).astype(np.uint8)


def test_doubtful_slices_become_flags_by_the_files_own_slice_index(make_nifti) -> None:
    img, gm = _phantom()
    # stored inferior-to-superior reversed (LAI): file slice 1 is canonical slice 4
    ip = make_nifti(img[:, :, ::-1], axcodes="LAI")
    gp = make_nifti(gm[:, :, ::-1], axcodes="LAI")
    doubtful = [{"slice": 1, "reasons": ["networks_disagree"], "action": "second_network", "networks_dice": 0.41},
                {"slice": 3, "reasons": ["outside_cord", "area_jump"], "action": "replaced", "networks_dice": 0.0}]
    entry, _ = build_entry(ip, gp, doubtful=doubtful)
    flags = dict(zip(entry["slices"]["index"], entry["slices"]["flags"]))
    assert flags[1] == ["doubtful:networks_disagree"]
    assert flags[3] == ["doubtful:outside_cord", "doubtful:area_jump"]
    assert all(not flags[k] for k in (0, 2, 4, 5))
    assert entry["n_flagged"] == 2
    assert entry["doubtful_slices"] == doubtful
    assert entry["flag_text"]["doubtful:networks_disagree"] == F.FLAG_TEXT["doubtful:networks_disagree"]


def test_no_doubts_no_flags(make_nifti) -> None:
    img, gm = _phantom()
    entry, _ = build_entry(make_nifti(img), make_nifti(gm), doubtful=[])
    assert entry["n_flagged"] == 0 and entry["doubtful_slices"] == []


def test_a_dropped_slice_without_gm_is_still_shown() -> None:
    flags = F.doubtful_flags([{"slice": 5, "reasons": ["outside_cord"]}], {k: k for k in range(6)}, 6)
    assert flags[5] == ("doubtful:outside_cord",) and all(f == () for f in flags[:5])


def test_doubts_follow_the_mask_when_the_image_stores_s_i_the_other_way(make_nifti) -> None:
    """The sidecar numbers slices along the segmented file's S-I axis, which its GM mask keeps; shown
    over the same grid stored with S-I reversed, a doubt lands on the same anatomy, under that image's
    own slice number."""
    img, gm = _phantom()
    ip_las, ip_lai = make_nifti(img, axcodes="LAS"), make_nifti(img[:, :, ::-1], axcodes="LAI")
    gp = make_nifti(gm, axcodes="LAS")  # sct-gm's mask of the LAS file: canonical slice k is its slice k
    doubtful = [{"slice": 1, "reasons": ["networks_disagree"], "action": "second_network"}]
    same, _ = build_entry(ip_las, gp, doubtful=doubtful)
    other, _ = build_entry(ip_lai, gp, doubtful=doubtful)
    flagged = [{i for i, f in zip(e["slices"]["index"], e["slices"]["flags"]) if f} for e in (same, other)]
    assert flagged == [{1}, {4}]  # canonical slice 1 is the LAI file's slice 6 - 1 - 1
    assert same["doubtful_slices"] == doubtful and other["doubtful_slices"] == [{**doubtful[0], "slice": 4}]
