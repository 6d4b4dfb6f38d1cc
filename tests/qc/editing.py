"""A small BIDS dataset with automatic GM masks and a QC report over it, for the editor's tests.

The same canonical (LAS) phantom is stored in the orientation each subject asks for, so a test knows
exactly which file voxel a display voxel is: display (row r, col c) of canonical slice k is canonical
(x = c, y = ny - 1 - r, k); LAS files store canonical as is, RPI files flip all three axes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

SHAPE = (36, 32, 6)  # canonical nx, ny, nz
ZOOMS = (0.5, 0.6, 4.0)


def phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, cord and an off-centre GM ellipse (left-anterior of the cord centre), canonical arrays."""
    nx, ny, nz = SHAPE
    x, y = np.mgrid[:nx, :ny]
    cord2d = ((x - 18) / 9) ** 2 + ((y - 15) / 7) ** 2 <= 1
    gm2d = ((x - 20) / 4) ** 2 + ((y - 17) / 3) ** 2 <= 1
    cord = np.repeat(cord2d[:, :, None], nz, axis=2).astype(np.uint8)
    gm = np.repeat(gm2d[:, :, None], nz, axis=2).astype(np.uint8)
    img = np.random.default_rng(seed).normal(100, 5, SHAPE).astype(np.float32) + 200 * cord + 100 * gm
    return img, cord, gm


def to_file(canonical: np.ndarray, axcodes: str) -> np.ndarray:
    t = ornt.ornt_transform(ornt.axcodes2ornt(("L", "A", "S")), ornt.axcodes2ornt(tuple(axcodes)))
    return ornt.apply_orientation(canonical, t)


def file_voxel(axcodes: str, row: int, col: int, file_slice: int) -> tuple[int, int, int]:
    """The file voxel of display (row, col) on the file's slice ``file_slice`` (derived by hand)."""
    nx, ny, _ = SHAPE
    x, y = col, ny - 1 - row
    if axcodes == "LAS":
        return x, y, file_slice
    if axcodes == "RPI":
        return nx - 1 - x, ny - 1 - y, file_slice
    raise ValueError(axcodes)


def save(path: Path, canonical: np.ndarray, axcodes: str, dtype=np.float32) -> Path:
    data = to_file(canonical, axcodes)
    t = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(tuple(axcodes)))
    affine = np.diag(list(ZOOMS) + [1.0]) @ ornt.inv_ornt_aff(t, data.shape)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def build(root: Path, subjects: dict[str, str], *, prob: bool = True) -> dict[str, dict[str, Path]]:
    """``root/ds`` (BIDS, one T2star per subject stored with the given axis codes, automatic masks in
    derivatives/sct-gm, optional soft maps) and ``root/qc`` with an entry each. Returns the paths."""
    from sctgm.qc import add_entry

    ds = root / "ds"
    ds.mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "editor test", "BIDSVersion": "1.10.0"}))
    out = {}
    for sub, codes in subjects.items():
        img, cord, gm = phantom(seed=len(out))
        image = save(ds / sub / "anat" / f"{sub}_T2star.nii.gz", img, codes)
        der = ds / "derivatives" / "sct-gm" / sub / "anat"
        auto = save(der / f"{sub}_T2star_label-GM_seg.nii.gz", gm, codes, np.uint8)
        if prob:
            save(der / f"{sub}_T2star_label-GM_probseg.nii.gz", gm * 0.9, codes)
        cord_path = save(ds / "derivatives" / "labels" / sub / "anat" / f"{sub}_T2star_label-SC_seg.nii.gz", cord,
                         codes, np.uint8)
        entry = add_entry(root / "qc", image, auto, cord_path=cord_path, model="tiny")
        out[sub] = {"image": image, "auto": auto, "cord": cord_path, "entry": entry,
                    "label": ds / "derivatives" / "labels" / sub / "anat" / f"{sub}_T2star_label-GM_seg.nii.gz"}
    return out


class Running:
    """A review server for ``qc`` in a thread (stopped by :meth:`stop`)."""

    def __init__(self, qc: Path) -> None:
        from sctgm.qc.serve import start_server

        self.server = start_server(qc)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/{self.server.token}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
