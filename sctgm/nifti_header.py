"""Checks on a NIfTI file's raw header, made before nibabel reads it, and the geometry fallbacks.

nibabel reads a damaged header in one of three ways: it raises an exception whose type and text vary
(a numpy dtype error, ``w2 should be positive``, a multi-line size message), it "fixes" the field and
prints the fix on stderr through its own logger (a zero voxel size becomes 1 mm: a silent wrong
geometry), or it asks for the claimed number of bytes before finding the file is shorter. Reading
the 348 (NIfTI-1) or 540 (NIfTI-2) header bytes ourselves first lets :mod:`sctgm.io` refuse each
damage with one line that names the field, and repair only what has one right answer
(docs/inputs.md lists both). Hand-written because nibabel has no "validate without fixing" call;
the fields are read through nibabel's own header classes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from .exceptions import InputImageError

#: nibabel's logger and Python's warning filters are process-wide: loads in threads (a Dask worker's)
#: take turns to swap them, so that each restores what it found. Held only while a header is read.
_CAPTURE_LOCK = threading.Lock()

#: Transform codes NIfTI defines (0 unknown .. 4 MNI-152; NIfTI-2 adds 5 template-other).
XFORM_CODES = range(0, 6)


def one_line(text: object) -> str:
    """``text`` with its whitespace (nibabel's newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())


def read_error_detail(exc: BaseException) -> str:
    """A short one-line detail for an exception raised while reading a file."""
    text = one_line(exc)
    if "read length must be non-negative" in text:  # nibabel reading a header extension
        return f"a header extension declares an impossible size ({text})"
    m = re.search(r"Expected (\d+) bytes, got (\d+) bytes", text)
    if m:
        return f"the header announces {m.group(1)} bytes of voxel data, the file holds {m.group(2)}"
    return text or type(exc).__name__


@contextlib.contextmanager
def nibabel_messages() -> Iterator[list[str]]:
    """Collect, instead of printing, what nibabel logs (its header fixes, through the
    ``nibabel.global`` logger) or warns (Python warnings) while the block runs; sct-gm reports the
    ones that matter itself, in its own one-line format, once the image is known to be valid.
    """
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(one_line(record.getMessage()))

    logger = logging.getLogger("nibabel.global")
    with _CAPTURE_LOCK:
        handlers, propagate = list(logger.handlers), logger.propagate
        logger.handlers[:] = [_Collect()]
        logger.propagate = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield messages
            messages.extend(one_line(w.message) for w in caught if not issubclass(w.category, DeprecationWarning))
        finally:
            logger.handlers[:] = handlers
            logger.propagate = propagate


def repairs_worth_saying(messages: list[str]) -> list[str]:
    """The nibabel messages that changed something a user should know (not the SPM-alignment notes
    nibabel leaves as they are)."""
    return [m for m in messages if "leaving at current value" not in m and "not SPM compatible" not in m]


#: NIfTI-1 and NIfTI-2: (magic's byte offset, magics, header size, header class, dim's byte offset and type).
#: The magic names the version, as for nibabel (which reads a NIfTI-1 file whatever its sizeof_hdr says).
_VERSIONS = ((344, (b"n+1\0", b"ni1\0"), 348, nib.Nifti1Header, 40, "i2"),
             (4, (b"n+2\0", b"ni2\0"), 540, nib.Nifti2Header, 16, "i8"))


def _raw_header(path: Path) -> nib.Nifti1Header | None:
    """The file's header as stored (nothing fixed), or None when it is not a NIfTI-1/2 header (left
    for nibabel to classify). Recognised by its magic, or failing that by its sizeof_hdr, so that a
    damaged sizeof_hdr skips no check; a NIfTI-2 file whose sizeof_hdr is damaged is refused (nibabel
    recognises NIfTI-2 by its sizeof_hdr, so it cannot read it); a sound NIfTI-2 file is read."""
    try:
        with ImageOpener(str(path)) as f:
            raw = f.read(540)
    except gzip.BadGzipFile:  # not gzip at all: nibabel says what it is
        return None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt "
                              f"({read_error_detail(exc)})") from None

    def number(order: str, at: int = 0, kind: str = "i4") -> int:
        end = at + np.dtype(kind).itemsize
        return int(np.frombuffer(raw[at:end], dtype=order + kind)[0]) if len(raw) >= end else 0

    versions = ([v for v in _VERSIONS if raw[v[0]:v[0] + 4] in v[1]][:1]
                or [v for v in _VERSIONS if v[2] in (number("<"), number(">"))])
    for _, _, size, klass, dim_at, dim_kind in versions:
        order = next((o for o in "<>" if number(o) == size), None)
        if order is None:  # sizeof_hdr damaged: the byte order that makes dim[0] 1 to 7, as nibabel guesses
            order = next((o for o in "<>" if 1 <= number(o, dim_at, dim_kind) <= 7), "<")
            if klass is nib.Nifti2Header:
                raise InputImageError(f"{path}: sizeof_hdr is {number(order)}, expected 540 (its magic says "
                                      f"NIfTI-2); the header is damaged")
        if len(raw) < size:
            raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt "
                                  f"({len(raw)} bytes, shorter than the {size}-byte NIfTI header)")
        return klass(binaryblock=raw[:size], endianness=order, check=False)
    return None


#: The first bytes of each compression a NIfTI may come in, and its file extension.
_COMPRESSIONS = ((b"\x1f\x8b", "gzip", ".gz"), (b"BZh", "bzip2", ".bz2"), (b"\x28\xb5\x2f\xfd", "zstd", ".zst"),
                 (b"\xfd7zXZ\x00", "xz", ".xz"))


def _check_compression(path: Path) -> None:
    """Refuse, with one line, a compression other than gzip (by name or content: nibabel would need
    an optional package for zstd, and sct-gm reads .nii and .nii.gz), and a name whose extension
    disagrees with its content (a gzip stream named .nii, plain bytes named .nii.gz)."""
    try:
        with open(path, "rb") as f:
            head = f.read(540) if path.is_file() else b""
    except OSError:
        return  # reported by the reader
    by_name = next((c for c in _COMPRESSIONS if path.name.lower().endswith(c[2])), None)
    by_content = next((c for c in _COMPRESSIONS if head.startswith(c[0])), None)
    other = next((c for c in (by_content, by_name) if c is not None and c[1] != "gzip"), None)
    if other is not None:
        raise InputImageError(f"{path}: is compressed with {other[1]} ({other[2]}), which sct-gm does not read; "
                              f"it reads .nii and .nii.gz files only: decompress it (or recompress it with gzip)")
    if by_content and not by_name:
        raise InputImageError(f"{path}: its content is gzip-compressed but its name does not end in .gz: the "
                              f"extension and the compression disagree; rename it to end in .nii.gz")
    plain_nifti = any(head[at:at + 4] in magics for at, magics, *_ in _VERSIONS)  # else: "not a NIfTI image"
    if by_name and not by_content and plain_nifti:
        raise InputImageError(f"{path}: its name ends in .gz but its content is not gzip-compressed: the "
                              f"extension and the compression disagree; rename it to end in .nii")


def check_file(path: Path, notes: list[str] | None = None) -> None:
    """Refuse, with one line naming the field, a NIfTI header that nibabel would crash on or "fix"
    into a wrong image; also refuse a header that announces more voxel data than the file can hold.
    Repairs that have one right answer are appended to ``notes`` (to be logged once the image is valid)."""
    _check_compression(path)
    hdr = _raw_header(path)
    if hdr is None:
        return

    def damaged(what: str) -> InputImageError:
        return InputImageError(f"{path}: {what}; the header is damaged")

    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        raise damaged(f"dim[0] (the number of dimensions) is {ndim}, expected 1 to 7")
    dims = [int(n) for n in hdr["dim"][1:ndim + 1]]
    if min(dims) < 1:
        raise damaged(f"the dimensions are {dims}; every size must be at least 1 voxel")
    code = int(hdr["datatype"])
    if code not in nib.nifti1.data_type_codes.value_set():
        raise damaged(f"datatype code {code} is not a NIfTI data type")
    pixdim = np.asarray(hdr["pixdim"][1:min(ndim, 3) + 1], dtype=float)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise damaged(f"the voxel size (pixdim) is {_fmt(pixdim)} mm; every spatial size must be a finite, "
                      f"non-zero number")
    offset = float(hdr["vox_offset"])
    single = hdr["magic"].item() == hdr.single_magic
    if not np.isfinite(offset) or offset < 0 or (single and 0 < offset < hdr.single_vox_offset):
        raise damaged(f"vox_offset is {offset:g}, expected 0 or at least {hdr.single_vox_offset} (the voxel data "
                      f"of a single-file NIfTI start after its {hdr.single_vox_offset}-byte header)")
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope != 0 and np.isfinite(slope) and not np.isfinite(inter):
        raise damaged(f"scl_inter is {inter:g} (with scl_slope {slope:g}); the stored values cannot be converted")
    # NIfTI: a slope of 0 means "no scaling"; nifti1_io and nibabel read a nan/inf slope the same way.
    if not np.isfinite(slope) and notes is not None:
        notes.append(f"{path}: scl_slope is {slope:g}; ignored, the stored values are used unscaled")
    if int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) in XFORM_CODES[1:]:
        readable = hdr.copy()  # as nibabel will read it: negative voxel sizes made positive
        readable["pixdim"][1:4] = np.abs(readable["pixdim"][1:4])
        problem = qform_problem(readable)
        if problem:
            raise InputImageError(f"{path}: invalid voxel geometry: {problem} and there is no sform to fall back "
                                  f"on; the voxel-to-world geometry is unknown")
    start = max(offset, hdr.single_vox_offset) if single else offset
    data_file = path if single else _image_file_of(path)
    if data_file is None:
        return  # a .hdr without its .img: nibabel says so
    need = int(np.prod(dims, dtype=np.float64)) * hdr.get_data_dtype().itemsize
    # a .gz is inflated only up to what the header announces, plus slack: a small file that inflates
    # to gigabytes (a decompression bomb) is refused before it costs memory
    limit = int(start) + need + DECOMPRESSION_SLACK_BYTES
    size_bytes = (_gzip_stream_size(data_file, notes, limit=limit) if data_file.name.lower().endswith(".gz")
                  else data_file.stat().st_size)
    if single:
        _check_extensions(path, hdr, offset)
    _check_size(data_file, hdr, start, dims, size_bytes)


#: Bytes a .gz may inflate to beyond the header, extensions and voxel data its header announces.
DECOMPRESSION_SLACK_BYTES = 1 << 20
#: Most bytes inflated at a time while checking a .gz (bounds memory whatever the compression ratio).
_INFLATE_CHUNK_BYTES = 1 << 22


def _image_file_of(header_file: Path) -> Path | None:
    """The .img(.gz) beside a NIfTI pair's .hdr(.gz), or None."""
    name = header_file.name
    for hdr_ext, img_ext in ((".hdr", ".img"), (".hdr.gz", ".img.gz"), (".HDR", ".IMG"), (".HDR.GZ", ".IMG.GZ")):
        if name.endswith(hdr_ext):
            candidate = header_file.with_name(name[:-len(hdr_ext)] + img_ext)
            return candidate if candidate.is_file() else None
    return None


def _gzip_stream_size(path: Path, notes: list[str] | None, chunk_bytes: int = 1 << 22, *, limit: int) -> int:
    """The decompressed size of a .gz file, read through once in chunks so that zlib checks every
    member's CRC and length: nibabel stops reading after the voxel data, before the trailer, and so
    accepts damaged bytes that still inflate (noisy data is often stored uncompressed in the stream).
    Bytes after the last member that are not gzip are ignored with a note, as gunzip does. At most
    :data:`_INFLATE_CHUNK_BYTES` are inflated at a time, and a stream that inflates beyond ``limit``
    bytes is refused there (a 4 MB file can inflate to 4 GB)."""
    total = 0
    try:
        with open(path, "rb") as f:
            inflater, buf = zlib.decompressobj(wbits=31), f.read(chunk_bytes)  # 31: gzip framing, CRC checked
            while buf:
                total += len(inflater.decompress(buf, _INFLATE_CHUNK_BYTES))
                if total > limit:
                    raise InputImageError(
                        f"{path}: its compressed data inflate to more than {limit} bytes, more than its header "
                        f"announces; refusing to read further (a damaged header or a decompression bomb)")
                buf = inflater.unconsumed_tail
                if buf:
                    continue
                if not inflater.eof:
                    buf = f.read(chunk_bytes)
                    continue
                rest = inflater.unused_data + f.read(max(0, 2 - len(inflater.unused_data)))
                if not rest:
                    return total
                if rest[:2] != b"\x1f\x8b":  # not another gzip member: trailing garbage
                    if notes is not None:
                        extra = len(rest) + os.fstat(f.fileno()).st_size - f.tell()
                        notes.append(f"{path}: {extra} bytes after the end of the gzip stream were ignored")
                    return total
                inflater, buf = zlib.decompressobj(wbits=31), rest
    except (OSError, zlib.error) as exc:
        raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt "
                              f"({read_error_detail(exc)})") from None
    raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt (the compressed stream "
                          f"ends before its end marker)")


def _check_extensions(path: Path, hdr: nib.Nifti1Header, offset: float) -> None:
    """Walk the header extensions (after the header's 4-byte extension flag, up to vox_offset) as
    nibabel will: each must declare a size of at least 8 bytes that ends before the voxel data."""
    start = hdr.sizeof_hdr + 4
    with ImageOpener(str(path)) as f:
        head = f.read(start + 1 if offset <= start else min(int(offset), 1 << 24))
    if len(head) <= hdr.sizeof_hdr or head[hdr.sizeof_hdr] == 0:
        return  # no extension
    if offset < start:
        raise InputImageError(f"{path}: the header says it has extensions but vox_offset {offset:g} leaves them no "
                              f"room (the voxel data must start after byte {start}); the header is damaged")
    pos, end = start, int(offset)
    while pos + 8 <= min(end, len(head)):
        esize = int(np.frombuffer(head[pos:pos + 4], dtype=hdr.endianness + "i4")[0])
        if esize < 8 or pos + esize > end:
            raise InputImageError(f"{path}: the header extension at byte {pos} declares {esize} bytes, which does not "
                                  f"fit between bytes {pos + 8} and {end} (vox_offset); the extensions are damaged")
        pos += esize


def _check_size(path: Path, hdr: nib.Nifti1Header, offset: float, dims: list[int], have: int) -> None:
    """``have``: the size in bytes of the file holding the voxels, after decompression for a .gz."""
    need = int(np.prod(dims, dtype=np.float64)) * hdr.get_data_dtype().itemsize
    if int(offset) + need > have:
        shape = "x".join(str(n) for n in dims)
        raise InputImageError(f"{path}: cannot be read, the file looks truncated or corrupt (the header announces "
                              f"{shape} voxels, {need} bytes from byte {int(offset)}, and the file holds {have} bytes)")


def qform_problem(hdr: nib.Nifti1Header) -> str | None:
    """Why the header's qform (quaternion, offsets and pixdim) is unusable, or None. Checked whatever
    qform_code says: a writer copies the qform even when its code is 0."""
    bcd = np.asarray([hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"]], dtype=float)
    offsets = np.asarray([hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"]], dtype=float)
    if not (np.all(np.isfinite(bcd)) and np.all(np.isfinite(offsets))):
        return f"the qform has non-finite values (quatern_b/c/d {_fmt(bcd)}, qoffset {_fmt(offsets)})"
    try:
        with np.errstate(all="ignore"):
            q = hdr.get_qform(coded=False)
    except nib.spatialimages.HeaderDataError as exc:  # e.g. negative pixdim (nibabel repairs it on load)
        return f"the qform cannot be computed ({one_line(exc)})"
    except ValueError:
        return (f"the qform quaternion (quatern_b, c, d) = {_fmt(bcd)} is not a rotation "
                f"(b^2+c^2+d^2 = {float(bcd @ bcd):.3g}, at most 1)")
    with np.errstate(all="ignore"):
        det = float(np.linalg.det(q[:3, :3])) if np.all(np.isfinite(q)) else float("nan")
    if not abs(det) >= 1e-12:
        return "the qform is degenerate (its voxel size is zero or not finite)"
    return None


def sform_problem(hdr: nib.Nifti1Header) -> str | None:
    """Why the header's sform is unusable, or None when it is usable or not set (sform_code 0)."""
    if int(hdr["sform_code"]) == 0:
        return None
    s = hdr.get_sform(coded=False)
    with np.errstate(all="ignore"):
        det = float(np.linalg.det(s[:3, :3])) if np.all(np.isfinite(s)) else float("nan")
    if not abs(det) >= 1e-12:
        return f"the sform (srow_x/y/z) is {'not finite' if not np.all(np.isfinite(s)) else 'degenerate'}"
    return None


def usable_geometry(img: nib.Nifti1Image, path: Path, notes: list[str]) -> nib.Nifti1Image:
    """``img`` itself, or a copy whose one unusable transform (qform or sform) is switched off when the
    other is valid (a note says so); raises :class:`InputImageError` when no valid transform is set.

    NIfTI stores the voxel-to-world transform twice; readers use the sform when its code is set
    (nibabel, FSL) and some the qform (ITK). When exactly one is broken the other still places the
    voxels, so sct-gm uses it and writes outputs whose broken transform is switched off (code 0).
    """
    hdr = img.header
    q_code, s_code = int(hdr["qform_code"]), int(hdr["sform_code"])
    q_bad, s_bad = qform_problem(hdr), sform_problem(hdr)
    if s_bad is None and q_bad is None:
        return _same_voxel_size(img, path)
    unknown = "the voxel-to-world geometry is unknown"
    new = hdr.copy()
    if s_bad is not None:
        if q_code == 0 or q_bad is not None:
            raise InputImageError(f"{path}: invalid voxel geometry: {s_bad} and there is no valid qform to fall "
                                  f"back on; {unknown}")
        notes.append(f"{path}: {s_bad}; the qform is used instead (the outputs' sform is switched off)")
        new.set_sform(hdr.get_qform(), code=0)
    elif q_code != 0 and s_code == 0:
        raise InputImageError(f"{path}: invalid voxel geometry: {q_bad} and there is no sform to fall back on; "
                              f"{unknown}")
    else:  # the qform is broken and the sform places the voxels (or the broken qform is unused)
        if q_code != 0:
            notes.append(f"{path}: {q_bad}; the sform is used instead (the outputs' qform is switched off)")
        new.set_qform(img.affine, code=0)
    return _same_voxel_size(img.__class__(img.dataobj, new.get_best_affine(), new), path)


#: Most relative difference between pixdim and the voxel size of the transform in use. float32 storage
#: differs by ~1e-7 and a writer rounding pixdim to 4 digits (0.4688 for 0.46875) by ~1e-4, while a
#: stale pixdim (left by a resampling) differs by percents; areas then agree with spacings to 0.2 %.
VOXEL_SIZE_RTOL = 1e-3


def _same_voxel_size(img: nib.Nifti1Image, path: Path) -> nib.Nifti1Image:
    """``img``, once its pixdim (the zooms: spacings, the fine grid) agrees with the column lengths
    of the transform that places its voxels (the sform when its code is set, else the qform: areas,
    volumes, positions); raises :class:`InputImageError` naming both sizes otherwise. A qform is built
    from pixdim (its qfac flips a column, keeping its length), so only an sform can disagree."""
    zooms = np.abs(np.asarray(img.header.get_zooms()[:3], dtype=float))
    with np.errstate(all="ignore"):
        sizes = np.linalg.norm(np.asarray(img.affine, dtype=float)[:3, :3], axis=0)[:len(zooms)]  # 2D: refused later
        fine = np.all(np.isfinite(sizes)) and np.all(np.isfinite(zooms)) and np.all(zooms > 0)
        if not fine or np.all(np.abs(zooms - sizes) <= VOXEL_SIZE_RTOL * sizes):
            return img  # a non-finite or zero size is refused, with its own message, by the caller
    which = "sform" if int(img.header["sform_code"]) else "qform"
    raise InputImageError(f"{path}: the voxel size in pixdim {_fmt(zooms)} mm disagrees with the {which}'s "
                          f"{_fmt(sizes)} mm (the lengths of its columns); one of them is stale and the voxel "
                          f"geometry is unknown: fix the header (e.g. set pixdim from the {which})")


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
