"""The CLI probe set of issue 22 ("nothing crashes, nothing is lost"), as a table: one row per probe a
hostile new user tried, with the exit code it must give and the words of its one line. A new way in
(a file kind, an option) gets a row here.

Exit codes: 0 done; 1 a folder run skipped some files (each named on its own line); 2 a user mistake
or a bad input, one line and nothing written; 130 interrupted. No row may print a traceback. The
model is a tiny random student, so each row takes well under a second.
"""

from __future__ import annotations

import errno
import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from kdsam.cli import main
from kdsam.data.synthetic import write_synthetic
from kdsam.models.loading import save_model
from kdsam.models.student import build_student
from tests import hostile

Make = Callable[[Path, Path], object]  # (tmp folder, tiny model.pt) -> writes the probe's files
Patch = Callable[[pytest.MonkeyPatch, Path], None]
Check = Callable[[Path, str, str], None]  # (tmp folder, stdout, stderr) -> further assertions


@dataclass(frozen=True)
class Probe:
    name: str
    argv: str  # {tmp}: the probe's folder, {model}: a tiny student's model.pt
    code: int
    words: tuple[str, ...] = ()  # in the one line (exit 2, 130), on stderr (1) or stdout (0)
    make: Make | None = None
    patch: Patch | None = None
    check: Check | None = None
    quiet: bool = False  # no warning either (torch's pickle-protocol UserWarning)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)  # the same random weights whichever tests ran first: a mask is not empty by chance
    save_model(build_student(None, "resnet18", 64), path)
    return path


# ---- the files probes read -------------------------------------------------------------------------


def _all(*makes: Make) -> Make:
    def make(tmp: Path, model: Path) -> None:
        for one in makes:
            one(tmp, model)

    return make


def image(tmp: Path, _model: Path) -> None:
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(tmp / "img.png")


def volume(tmp: Path, _model: Path) -> None:
    hostile.nifti(tmp, "ct.nii.gz")


def nan_volume(tmp: Path, _model: Path) -> None:
    """A float MR volume with one NaN voxel (which used to blank the whole volume)."""
    data = np.random.default_rng(0).normal(500, 50, (24, 20, 6)).astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp / "nan.nii.gz")


def folder_with(kind: str) -> Make:
    """in/: one damaged file, then a good 2D case sorted after it."""

    def make(tmp: Path, _model: Path) -> None:
        (tmp / "in").mkdir()
        hostile.BAD_CASES[kind][0](tmp / "in")
        hostile.npz_case(tmp / "in", "zz_good.npz")

    return make


def case(name: str, **arrays: object) -> Make:
    return lambda tmp, _model: hostile.npz_case(tmp, name, **arrays)


def dataset(tmp: Path, _model: Path) -> None:
    write_synthetic(tmp / "ds", n=6)


def split_file(content: Callable[[list[str]], object]) -> Make:
    """split.json made from the dataset's sample names."""

    def make(tmp: Path, model: Path) -> None:
        dataset(tmp, model)
        names = sorted(p.stem for p in (tmp / "ds" / "images").iterdir())
        (tmp / "split.json").write_text(json.dumps(content(names)))

    return make


def run_folder(options: dict[str, object]) -> Make:
    """A distilled run folder (the tiny student) whose finetune stage started with `options`."""

    def make(tmp: Path, model: Path) -> None:
        dataset(tmp, model)
        (tmp / "run").mkdir()
        shutil.copy(model, tmp / "run" / "model.pt")
        config = {"distill": {"completed": True}, "finetune": {"options": options}}
        (tmp / "run" / "config.json").write_text(json.dumps(config))

    return make


def dicom_dataset(tmp: Path, _model: Path) -> None:
    """A folder dataset: one good PNG, one DICOM without Rows, each with its mask."""
    for sub in ("images", "masks"):
        (tmp / "ds" / sub).mkdir(parents=True)
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(tmp / "ds" / "images" / "good.png")
    hostile.bad_dicom(tmp / "ds" / "images", "no-rows")
    for name in ("good", "no-rows"):
        mask = np.zeros((32, 40), np.uint8)
        mask[5:20, 5:20] = 255
        Image.fromarray(mask).save(tmp / "ds" / "masks" / f"{name}.png")


def onnx_config(**config: object) -> Make:
    def make(tmp: Path, _model: Path) -> None:
        (tmp / "onnx").mkdir()
        base = {"img_size": 64, "normalization": "sam", "resize_mode": "longest", "pixel_mean": [0, 0, 0]}
        (tmp / "onnx" / "kdsam_onnx.json").write_text(json.dumps({**base, "pixel_std": [1, 1, 1], **config}))

    return make


def model_file(card: object) -> Make:
    return lambda tmp, _model: torch.save({"card": card, "state_dict": {}}, tmp / "odd.pt")


def write(name: str, content: str) -> Make:
    def make(tmp: Path, _model: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(content)

    return make


def scored_pair(segs_cut: bool = False, efficiency: str | None = None) -> Make:
    """preds/ and gts/ for one 2D case; the prediction cut in half, or a foreign efficiency.csv."""

    def make(tmp: Path, _model: Path) -> None:
        for sub in ("preds", "gts"):
            (tmp / sub).mkdir()
        gts = np.zeros((16, 16), np.uint8)
        gts[4:9, 4:9] = 1
        np.savez_compressed(tmp / "gts" / "2DBox_a.npz", gts=gts)
        np.savez_compressed(tmp / "preds" / "2DBox_a.npz", segs=gts)
        if segs_cut:
            whole = (tmp / "preds" / "2DBox_a.npz").read_bytes()
            (tmp / "preds" / "2DBox_a.npz").write_bytes(whole[: len(whole) // 2])
        if efficiency is not None:
            (tmp / "preds" / "efficiency.csv").write_text(efficiency)

    return make


# ---- faults the probes inject ----------------------------------------------------------------------

_HELD: list = []  # lock files held for a probe, closed after it


def hold_lock(_mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """Another process's run is writing into tmp/run: its own open file on RUN/.lock, locked."""
    import fcntl

    handle = open(tmp / "run" / ".lock", "w")  # noqa: SIM115 - closed by the runner after the probe
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD.append(handle)


def refuse_mkdir(mp: pytest.MonkeyPatch, _tmp: Path) -> None:
    """An immutable folder (chattr +i): even root's mkdir inside it gets EPERM."""
    real = Path.mkdir

    def mkdir(self: Path, *args, **kwargs) -> None:
        if self.name == "immutable":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))
        real(self, *args, **kwargs)

    mp.setattr(Path, "mkdir", mkdir)


def full_disk_on_png(mp: pytest.MonkeyPatch, _tmp: Path) -> None:
    def save(self, fp, *args, **kwargs) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(Image.Image, "save", save)


def ctrl_c(mp: pytest.MonkeyPatch, _tmp: Path) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    mp.setattr("kdsam.infer.files.run_file", interrupted)


# ---- checks beyond the exit code and the line --------------------------------------------------------


def good_case_written(tmp: Path, out: str, _err: str) -> None:
    assert "1 segmented, 0 already done, 1 skipped" in out
    with np.load(tmp / "out" / "zz_good.npz") as written:
        assert written["segs"].shape == (32, 40)


def sidecar_counts_the_nan(tmp: Path, _out: str, _err: str) -> None:
    meta = json.loads((tmp / "mask.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert meta["intensity"]["method"] == "percentile" and meta["intensity"]["non_finite_voxels"] == 1
    assert np.asarray(nib.load(tmp / "mask.nii.gz").dataobj).any()


def nothing_written(*names: str) -> Check:
    def check(tmp: Path, _out: str, _err: str) -> None:
        for name in names:
            assert not (tmp / name).exists(), name
        assert not list(tmp.rglob(".*.tmp"))

    return check


def kept(name: str, content: str) -> Check:
    return lambda tmp, _out, _err: (tmp / name).read_text() == content or pytest.fail(f"{name} was replaced")


def no_code_ran(tmp: Path, _out: str, _err: str) -> None:
    assert not (tmp / "PWNED").exists()


PREDICT = "predict --model {model}"
IMAGE = f"{PREDICT} --image {{tmp}}/img.png --box 2,2,20,20"
VOLUME = f"{PREDICT} --image {{tmp}}/ct.nii.gz --out {{tmp}}/mask.nii.gz"
FOLDER = f"{PREDICT} --input {{tmp}}/in --out {{tmp}}/out --box 1,1,5,5"
FINETUNE = "finetune --run-dir {tmp}/run --data folder:{tmp}/ds --epochs 1"
CONFIG = "not a weights-only checkpoint: refusing to unpickle"

PROBES = [
    # 2. one bad file never stops a folder run: named, skipped, counted, exit 1
    *[
        Probe(f"folder-skips-{kind}", FOLDER, 1, ("skipped", *words), folder_with(kind), check=good_case_written)
        for kind, (_, words) in hostile.BAD_CASES.items()
    ],
    Probe("inspect-dicom-without-rows", "data inspect folder:{tmp}/ds", 0, ("no-rows", "Rows"), dicom_dataset),
    # 3. a run folder belongs to one run
    Probe(
        "resume-other-data",
        f"{FINETUNE} --resume",
        2,
        ("--data folder:", "the run started with folder:/elsewhere"),
        run_folder({"data": "folder:/elsewhere"}),
    ),
    Probe(
        "resume-other-seed", f"{FINETUNE} --resume", 2, ("--seed 0 (the run started with 3)",), run_folder({"seed": 3})
    ),
    Probe(
        "second-run-into-a-locked-folder",
        FINETUNE,
        2,
        ("another kdsam run is writing into this folder",),
        run_folder({}),
        hold_lock,
    ),
    Probe(
        "split-file-name-in-two-splits",
        "data inspect folder:{tmp}/ds --split-file {tmp}/split.json",
        2,
        ("is in both train and val",),
        split_file(lambda n: {"train": n[:3], "val": n[2:4]}),
    ),
    Probe(
        "split-file-unknown-names",
        "data inspect folder:{tmp}/ds --split-file {tmp}/split.json",
        2,
        ("1 name(s) not in the dataset", "'nope'"),
        split_file(lambda n: {"train": [*n[:3], "nope"]}),
    ),
    Probe(
        "split-file-not-a-list",
        "data inspect folder:{tmp}/ds --split-file {tmp}/split.json",
        2,
        ('"train" must be a list of sample names, not 5',),
        split_file(lambda n: {"train": 5}),
    ),
    # 4. non-finite values
    Probe(
        "nan-voxel-percentile-window",
        f"{PREDICT} --image {{tmp}}/nan.nii.gz --box3d 4,4,1,14,14,4 --out {{tmp}}/mask.nii.gz",
        0,
        ("object voxels",),
        nan_volume,
        check=sidecar_counts_the_nan,
    ),
    Probe("window-infinite-width", f"{IMAGE} --out {{tmp}}/o.png --window 0,inf", 2, ("LEVEL,WIDTH",), image),
    Probe("window-nan-level", f"{IMAGE} --out {{tmp}}/o.png --window nan,400", 2, ("LEVEL,WIDTH",), image),
    # 5. malformed medical files: one line, exit 2
    *[
        Probe(
            f"dicom-{kind}",
            f"{PREDICT} --image {{tmp}}/{kind}.dcm --box 1,1,5,5 --out {{tmp}}/o.png",
            2,
            (f"{kind}.dcm", words),
            lambda tmp, _m, kind=kind: hostile.bad_dicom(tmp, kind),
        )
        for kind, (_, words) in hostile.BAD_DICOMS.items()
    ],
    Probe(
        "corrupt-gzip-nifti",
        f"{PREDICT} --image {{tmp}}/corrupt.nii.gz --box3d 1,1,1,4,4,4 --out {{tmp}}/m.nii.gz",
        2,
        ("corrupt.nii.gz: unreadable NIfTI",),
        lambda tmp, _m: hostile.corrupt_gzip_nifti(tmp),
        check=nothing_written("m.nii.gz"),
    ),
    Probe(
        "nifti-claiming-huge-dimensions",
        f"{PREDICT} --image {{tmp}}/huge.nii --box3d 1,1,1,4,4,4 --out {{tmp}}/m.nii.gz",
        2,
        ("huge.nii: its header claims shape (30000, 30000, 30000)",),
        lambda tmp, _m: hostile.huge_nifti(tmp),
    ),
    # 6. 2D npz boxes are checked like --box
    *[
        Probe(
            f"npz-2d-box-{what}",
            f"{PREDICT} --image {{tmp}}/2DBox_x.npz --out {{tmp}}/o.npz",
            2,
            ("2DBox_x.npz: box", words),
            case("2DBox_x.npz", boxes=np.array([box])),
            check=nothing_written("o.npz"),
        )
        for what, box, words in [
            ("outside", [0, 0, 100, 20], "reaches outside the 40x32 image"),
            ("inverted", [20, 20, 4, 4], "X0 must be less than X1"),
            ("nan", [np.nan, 1, 9, 9], "X0 must be less than X1"),
        ]
    ],
    # 8. tracebacks where one line belongs
    Probe(
        "out-under-a-file",
        f"{IMAGE} --out {{tmp}}/afile/x.png",
        2,
        ("a file of that name is in the way",),
        _all(image, write("afile", "x")),
    ),
    Probe(
        "out-in-sysfs", f"{IMAGE} --out /sys/kdsam-probe.png", 2, ("/sys/kdsam-probe.png: cannot write here",), image
    ),
    Probe(
        "out-in-an-immutable-folder",
        f"{IMAGE} --out {{tmp}}/immutable/x.png",
        2,
        ("immutable: cannot create this folder (Operation not permitted)",),
        image,
        refuse_mkdir,
    ),
    Probe(
        "export-out-is-a-file",
        "export --model {model} --out {tmp}/afile --no-int8",
        2,
        ("afile: a file",),
        write("afile", "x"),
    ),
    Probe(
        "evaluate-truncated-segs",
        "evaluate --predictions {tmp}/preds --gts {tmp}/gts --out {tmp}/ev",
        2,
        ("no case could be scored", "2DBox_a.npz"),
        scored_pair(segs_cut=True),
    ),
    Probe(
        "evaluate-efficiency-without-time",
        "evaluate --predictions {tmp}/preds --gts {tmp}/gts --out {tmp}/ev",
        2,
        ("efficiency.csv: not a timing file",),
        scored_pair(efficiency="case,seconds\n2DBox_a.npz,1\n"),
    ),
    Probe(
        "rerun-efficiency-without-time",
        FOLDER,
        2,
        ("efficiency.csv: not a timing file",),
        _all(folder_with("truncated-npz"), write("out/efficiency.csv", "case,seconds\nzz_good.npz,1\n")),
    ),
    Probe(
        "onnx-config-img-size-text",
        "predict --model {tmp}/onnx --image {tmp}/img.png --box 2,2,20,20 --out {tmp}/o.png",
        2,
        ("img_size 'abc' is not a positive whole number",),
        _all(image, onnx_config(img_size="abc")),
    ),
    Probe(
        "model-card-is-a-list",
        "predict --model {tmp}/odd.pt --image {tmp}/img.png --box 2,2,20,20 --out {tmp}/o.png",
        2,
        ("its card is a list",),
        _all(image, model_file([1, 2])),
    ),
    Probe(
        "model-input-size-text",
        "predict --model {tmp}/odd.pt --image {tmp}/img.png --box 2,2,20,20 --out {tmp}/o.png",
        2,
        ("input_size 'abc'",),
        _all(image, model_file({"kind": "student", "backbone": "resnet18", "input_size": "abc"})),
    ),
    Probe("predict-threads-negative", f"{IMAGE} --out {{tmp}}/o.png --threads -1", 2, ("--threads -1",), image),
    Probe("bench-threads-negative", "bench --models student:resnet18@64 --threads -1", 2, ("--threads -1",)),
    Probe(
        "boxes-json-3d-not-whole-voxels",
        f"{PREDICT} --input {{tmp}}/in --out {{tmp}}/out --boxes {{tmp}}/boxes.json",
        1,
        ("skipped", "ct.nii.gz: its --boxes 3D entries are voxel indices, whole numbers"),
        _all(
            lambda tmp, _m: (tmp / "in").mkdir(),
            lambda tmp, m: volume(tmp / "in", m),
            write("boxes.json", '{"ct.nii.gz": [[8.5, 5, 1, 15, 13, 4]]}'),
        ),
        check=lambda tmp, out, _err: "0 segmented, 0 already done, 1 skipped" in out or pytest.fail(out),
    ),
    Probe("train-threads-negative", f"{FINETUNE} --threads -1", 2, ("--threads -1",), run_folder({})),
    Probe(
        "pickle-with-code-checkpoint",
        "predict --model {tmp}/evil.pt --image {tmp}/img.png --box 2,2,20,20 --out {tmp}/o.png",
        2,
        (CONFIG, "system"),
        _all(image, lambda tmp, _m: hostile.pickle_with_code(tmp)),
        check=no_code_ran,
        quiet=True,
    ),
    # 9. say what you change
    Probe("box3d-not-whole-voxels", f"{VOLUME} --box3d 8.5,5,1,15,13,4", 2, ("whole numbers",), volume),
    Probe(
        "box-with-an-npz-case",
        f"{PREDICT} --image {{tmp}}/2DBox_x.npz --box 1,1,5,5 --out {{tmp}}/o.npz",
        2,
        ("carries its own boxes",),
        case("2DBox_x.npz"),
    ),
    # Keep: nothing overwritten without --overwrite, no pickle code run, Ctrl-C is 130, atomic writes
    Probe(
        "no-overwrite-without-flag",
        f"{IMAGE} --out {{tmp}}/o.png",
        2,
        ("--overwrite",),
        _all(image, write("o.png", "keep me")),
        check=kept("o.png", "keep me"),
    ),
    Probe(
        "no-overwrite-of-an-export",
        "export --model {model} --out {tmp}/exp --no-int8",
        2,
        ("already holds an export",),
        write("exp/kdsam_onnx.json", "{}"),
        check=kept("exp/kdsam_onnx.json", "{}"),
    ),
    Probe(
        "npz-object-array-not-unpickled",
        f"{PREDICT} --image {{tmp}}/2DBox_obj.npz --out {{tmp}}/o.npz",
        2,
        ("2DBox_obj.npz", "allow_pickle=False"),
        case("2DBox_obj.npz", imgs=np.array([{"a": 1}], dtype=object)),
    ),
    Probe("ctrl-c", f"{IMAGE} --out {{tmp}}/o.png", 130, ("interrupted",), image, ctrl_c),
    Probe(
        "disk-full-writing-a-mask",
        f"{IMAGE} --out {{tmp}}/o.png",
        2,
        ("o.png: disk full while writing",),
        image,
        full_disk_on_png,
        check=nothing_written("o.png"),
    ),
]


def _stderr_lines(err: str) -> list[str]:
    """stderr without tqdm's progress bars (carriage-return redrawn)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_probe(probe: Probe, tiny_model: Path, tmp_path: Path, capsys, monkeypatch, recwarn) -> None:
    if probe.make:
        probe.make(tmp_path, tiny_model)
    try:
        if probe.patch:
            probe.patch(monkeypatch, tmp_path)
        recwarn.clear()
        argv = [arg.format(tmp=tmp_path, model=tiny_model) for arg in shlex.split(probe.argv)]
        code = main(argv)
    finally:
        while _HELD:
            _HELD.pop().close()
    out, err = capsys.readouterr()
    lines = _stderr_lines(err)
    assert code == probe.code, err
    assert "Traceback" not in err
    if code in (2, 130):  # the one line, last; training commands log progress lines before it
        said = [line for line in lines if line.startswith("kdsam ")]
        assert len(said) == 1 and lines[-1] == said[0], lines
        assert all(word in said[0] for word in probe.words), said[0]
    else:
        assert all(word in (err if code == 1 else out) for word in probe.words), (out, err)
    if probe.quiet:
        assert not [str(w.message) for w in recwarn]
    if probe.check:
        probe.check(tmp_path, out, err)
