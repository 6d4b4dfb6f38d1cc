"""Every shell command of README.md and docs/*.md runs, so that an example cannot rot.

The commands (fenced ``sh``/``bash`` blocks, and indented blocks of ``sct-gm`` lines) run in the
order of the documents, in one temporary folder laid out from ../shared so that each example's file
names exist (MAPPING, below: the example name -> the real file). What a test cannot run is skipped
with its reason (SKIPPED): a GPU, a cluster, the network (pip), another project's tool. Documented
rewrites (:func:`rewrite`) keep the suite fast: ``sct-gm segment`` without ``-m`` gets ``-m challenge``
(3.4x faster than the default ``large``, which tests/segment/test_real_data.py runs on the same data),
``sct-gm train`` gets ``--max-steps 2 --overwrite`` (the examples are alternatives writing the same
folder; a real run takes minutes), ``xdg-open FILE`` (a desktop browser) becomes ``test -s FILE``, and
a command repeated in another document runs once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
T2S = ("sct_testing_data", "t2s")
MT = ("sct_testing_data", "mt")

#: Example file name (in the folder the commands run in) -> the ../shared/data file it stands for.
MAPPING: dict[str, tuple[str, ...]] = {
    "t2s.nii.gz": (*T2S, "t2s.nii.gz"),
    "t2s_seg.nii.gz": (*T2S, "t2s_seg.nii.gz"),
    "t2s_gmseg_manual.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "img.nii.gz": (*T2S, "t2s.nii.gz"),
    "gm_corrected.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "other.nii.gz": (*MT, "mt1.nii.gz"),
    "data/a/t2s.nii.gz": (*T2S, "t2s.nii.gz"),
    "data/b/t2s.nii.gz": (*T2S, "t2s.nii.gz"),
    "sub-01_T2star.nii.gz": (*T2S, "t2s.nii.gz"),
    "sub-01_T2star_seg.nii.gz": (*T2S, "t2s_seg.nii.gz"),
    "sub-01_T2star_gmseg.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "sub-01_T2star_gmseg_corrected.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "sub-02_T2star.nii.gz": (*MT, "mt1.nii.gz"),
    # ds/ is the folder itself (a link to "."), a BIDS dataset of three subjects:
    "sub-01/ses-1/anat/sub-01_ses-1_T2star.nii.gz": (*T2S, "t2s.nii.gz"),
    "derivatives/labels/sub-01/ses-1/anat/sub-01_ses-1_T2star_label-GM_seg.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "derivatives/labels/sub-01/ses-1/anat/sub-01_ses-1_T2star_label-SC_seg.nii.gz": (*T2S, "t2s_seg.nii.gz"),
    "sub-02/anat/sub-02_T2star.nii.gz": (*MT, "mt1.nii.gz"),
    "sub-02/anat/sub-02_MTS.nii.gz": (*MT, "mt0.nii.gz"),
    "derivatives/labels/sub-02/anat/sub-02_T2star_label-GM_seg.nii.gz": (*MT, "mt1_gmseg_goldstandard.nii.gz"),
    "derivatives/labels/sub-02/anat/sub-02_T2star_label-SC_seg.nii.gz": (*MT, "mt1_seg.nii.gz"),
    "sub-03/anat/sub-03_T2star.nii.gz": (*T2S, "t2s.nii.gz"),
    "derivatives/labels/sub-03/anat/sub-03_T2star_label-GM_seg.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "derivatives/labels/sub-03/anat/sub-03_T2star_label-SC_seg.nii.gz": (*T2S, "t2s_seg.nii.gz"),
    # the GM challenge's layout (DIR, training-data): label 1 is GM
    "DIR/site1-sc01-image.nii.gz": (*T2S, "t2s.nii.gz"),
    "DIR/site1-sc01-mask-r1.nii.gz": (*T2S, "t2s_gmseg_manual.nii.gz"),
    "DIR/site2-sc01-image.nii.gz": (*MT, "mt1.nii.gz"),
    "DIR/site2-sc01-mask-r1.nii.gz": (*MT, "mt1_gmseg_goldstandard.nii.gz"),
}
#: Also made: t2s_seg_labeled.nii.gz (vertebral levels 3 and 4 on the cord mask), training-data (= DIR).

#: A command matching the pattern is not run, for this reason.
SKIPPED: tuple[tuple[str, str], ...] = (
    (r"^(python3? -m )?pip install", "installs packages (network)"),
    (r"-m pytest", "the test suite itself"),
    (r"--scheduler tcp://", "needs a Dask cluster"),
    (r"--device cuda|bench/gpu\.py", "needs a GPU"),
    (r"^(source |srun |SCHED=|status=|kill |exit )|\$SLURM|/project/", "a SLURM job script (needs a cluster)"),
    (r"manual_correction\.py", "another project's tool (SCT's manual-correction, fetched from the network)"),
    (r"bench/speed\.py", "the speed benchmark (minutes of timings; bench/ scripts are measurements, not tests)"),
    (r"^sct-gm metrics \.\.\.", "a placeholder (\"...\"), not a command"),
    (r"^sct-gm qc --serve", "a web server that runs until Ctrl-C (tests/qc/test_serve.py runs it)"),
)


def extract(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of the shell commands of a Markdown file: fenced sh/bash blocks, and
    indented blocks whose lines start with ``sct-gm`` or ``args=``; comments removed, a line ending
    with ``do ...; done`` kept whole."""
    out, fence = [], None
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^\s*```(\w*)", line)
        if m:
            fence = None if fence is not None else m.group(1)
            continue
        text = line.strip()
        if fence in ("sh", "bash") or (fence is None and line.startswith("    ") and
                                       re.match(r"(sct-gm [a-z]|args=)", text)):  # not "sct-gm: ..." output
            command = _strip_comment(text)
            if command:
                out.append((i, command))
    return out


def _strip_comment(text: str) -> str:
    """The command without its trailing ``# comment`` (a '#' outside quotes, after a blank)."""
    quote = None
    for k, ch in enumerate(text):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (k == 0 or text[k - 1] in " \t"):
            return text[:k].rstrip()
    return text


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command)), None)


def rewrite(command: str) -> str:
    command = re.sub(r"^xdg-open ", "test -s ", command)
    command = re.sub(r"^python3? bench/", f"{sys.executable} {REPO}/bench/", command)
    if command.startswith("sct-gm train "):
        command += " --max-steps 2 --overwrite"
    if command.startswith("sct-gm segment ") and not re.search(r" (-m|--model) ", command):
        command += " -m challenge"
    return command


def _commands() -> list[tuple[str, int, str]]:
    return [(p.relative_to(REPO).as_posix(), i, c) for p in DOCS for i, c in extract(p)]


def test_the_extractor_finds_the_documented_commands():
    commands = [c for _, _, c in _commands()]
    assert "sct-gm segment -i t2s.nii.gz -m challenge -o out/gm.nii.gz" in commands
    assert any(c.startswith("args=(); for f in ") for c in commands)
    assert "sct-gm fetch-model --list" in commands and len(commands) > 40
    assert _strip_comment("sct-gm x 'a # b' # c") == "sct-gm x 'a # b'"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data, shared_models) -> Path:
    work = tmp_path_factory.mktemp("docs")
    for name, parts in MAPPING.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data.joinpath(*parts), work / name)
    shutil.copytree(work / "DIR", work / "training-data")
    (work / "ds").symlink_to(".")
    (work / "dataset_description.json").write_text('{"Name": "docs", "BIDSVersion": "1.10.0"}')
    cord = nib.load(str(work / "t2s_seg.nii.gz"))
    data = np.asarray(cord.dataobj) > 0.5
    levels = np.where(data, 3, 0).astype(np.uint8)
    levels[:, :, : data.shape[2] // 2][data[:, :, : data.shape[2] // 2]] = 4  # lower slices: level 4
    nib.save(nib.Nifti1Image(levels, cord.affine, cord.header), str(work / "t2s_seg_labeled.nii.gz"))
    return work


def test_every_documented_command_runs(workdir, shared_models, tmp_path_factory):
    env = {**os.environ, "SCTGM_MIRROR": str(shared_models), "SCTGM_HOME": str(tmp_path_factory.mktemp("home")),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    shim = f'sct-gm() {{ "{sys.executable}" -m sctgm "$@"; }}\n'  # the console script, whatever the install
    failed, ran, skipped, seen = [], 0, [], set()
    for doc, line, command in _commands():
        why = skip_reason(command)
        if why:
            skipped.append(f"{doc}:{line}: {why}")
            continue
        if command.startswith("args=") or "\"${args[@]}\"" in command:  # a loop and its use: one script
            continue
        if rewrite(command) in seen:
            continue
        seen.add(rewrite(command))
        res = subprocess.run(["bash", "-c", shim + rewrite(command)], cwd=workdir, env=env, capture_output=True,
                             text=True, timeout=600)
        ran += 1
        if res.returncode != 0:
            failed.append(f"{doc}:{line}: {command}\n  exit {res.returncode}: {res.stderr.strip()[-600:]}")
    for doc, line, loop in [(d, n, c) for d, n, c in _commands() if c.startswith("args=")]:
        use = next(c for d, n, c in _commands() if d == doc and n == line + 1)
        res = subprocess.run(["bash", "-c", shim + loop + "\n" + rewrite(use) + "\ntest ${#args[@]} -gt 0"],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        ran += 1
        if res.returncode != 0:
            failed.append(f"{doc}:{line}: {loop} / {use}\n  exit {res.returncode}: {res.stderr.strip()[-600:]}")
    assert failed == [], "\n".join(failed)
    assert ran > 30, skipped  # (README and docs held 40 runnable commands, 21 skipped, 9 of them one SLURM script)


def test_the_documented_sidecar_has_the_real_keys(tiny_model, make_nifti, tmp_path):
    """docs/batch.md's sidecar sample: the keys and values of a real BIDS sidecar (batch_size null)."""
    import json

    from click.testing import CliRunner

    from sctgm.cli import main
    from .conftest import cord_phantom_volume

    text = (REPO / "docs" / "batch.md").read_text(encoding="utf-8")
    sample = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    root = tmp_path / "ds"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "d", "BIDSVersion": "1.10.0"}')
    make_nifti(cord_phantom_volume(seed=1), name="ds/sub-01/anat/sub-01_T2star.nii.gz")
    res = CliRunner().invoke(main, ["segment", "--bids", str(root), "-m", tiny_model(), "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    real = json.loads(next((root / "derivatives" / "sct-gm").rglob("*_label-GM_seg.json")).read_text())
    assert set(sample) == set(real)
    want, got = sample["GeneratedBy"][0]["Parameters"], real["GeneratedBy"][0]["Parameters"]
    assert set(want) == set(got) and want["batch_size"] == got["batch_size"] is None
    assert set(sample["Result"]) - {"..."} <= set(real["Result"])
