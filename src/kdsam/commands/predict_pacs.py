"""`kdsam predict` against a PACS over DICOMweb (kdsam.infer.dicomweb).

--image dicomweb:.../series/UID reads the series by WADO-RS into a scratch folder and segments it
exactly as local DICOM is (a folder of slices is a volume, one image is 2D); --out dicomweb:URL writes
the DICOM SEG to a local folder first, then stores it by STOW-RS, and removes the local copy only once
the PACS has taken it; --input dicomweb:.../studies/UID does that for each image series of a study.
Nothing reaches the PACS before the whole SEG exists, so a failure leaves no partial object there.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdsam.commands.predict_case import label_names, model_for, prompts_from, segment_one, summary
from kdsam.errors import KdsamError
from kdsam.infer import dicomweb
from kdsam.infer.dicomweb import PacsError, Target
from kdsam.infer.files import sidecar
from kdsam.utils.atomic import write_json


def run(args: argparse.Namespace) -> int:
    if args.overlay and isinstance(args.out, Target):
        raise KdsamError("--overlay is written beside a local --out; leave it out with --out dicomweb:")
    return run_study(args) if args.input is not None else run_series(args)


def _store_target(out: Path | Target) -> Target | None:
    """--out as a place to store SEGs: a DICOMweb service root, or None for a local path."""
    if not isinstance(out, Target):
        return None
    if out.study or out.series:
        raise KdsamError(f"--out {out}: store to the DICOMweb service root (dicomweb:URL); the SEG names its study")
    return out


@contextmanager
def _seg_folder(store: Target | None, local: Path) -> Iterator[Path]:
    """Where the SEG is written: `local`, or for the PACS a private (0700: it names the patient) temporary
    folder, removed once the PACS holds the SEG or when no SEG was written, kept when the store fails."""
    if store is None:
        yield local
        return
    folder = Path(tempfile.mkdtemp(prefix="kdsam-seg-"))
    try:
        yield folder
    finally:
        if not any(folder.glob("*.dcm")):
            shutil.rmtree(folder, ignore_errors=True)


def _record_source(output: Path, source: Target) -> None:
    """The sidecar names the PACS series, not the scratch folder it was read into."""
    import json

    path = sidecar(output)
    record = json.loads(path.read_text())
    record["input"] = str(source)
    write_json(path, record)


def _store(target: Target, output: Path, record: dict) -> str:
    """STOW-RS the SEG; the local copy goes once the PACS holds it. One line either way."""
    uid = dicomweb.store_seg(dicomweb.connect(target), target, output)
    output.unlink()
    sidecar(output).unlink(missing_ok=True)
    unit = "voxels" if record["kind"] == "volume" else "pixels"
    return f"{target}: stored SEG {uid} (series {record['series_instance_uid']}, {record['foreground']} object {unit})"


def run_series(args: argparse.Namespace) -> int:
    """One series or file in, one mask or SEG out (locally or to the PACS)."""
    source, store = args.image, _store_target(args.out)
    if isinstance(source, Target) and not source.series:
        raise KdsamError(f"--image {source}: name a series (.../studies/UID/series/UID), or use --input for a study")
    with tempfile.TemporaryDirectory(prefix="kdsam-wado-") as scratch, _seg_folder(store, args.out) as folder:
        local = source
        if isinstance(source, Target):
            local = dicomweb.fetch_series(dicomweb.connect(source), source, Path(scratch))
        name = source.series if isinstance(source, Target) else Path(source).name.removesuffix(".dcm")
        out = folder / f"{name}.dcm" if store else args.out
        output, record = segment_one(argparse.Namespace(**{**vars(args), "image": local, "out": out}))
        if isinstance(source, Target):
            _record_source(output, source)
        print(_store(store, output, record) if store else summary(output, record))
    return 0


def run_study(args: argparse.Namespace) -> int:
    """Each image series of a study: to the PACS, or as <SeriesUID>.dcm into a local folder. A series
    the model cannot take is skipped (exit 1, as for a folder); a failing PACS stops the run (exit 2)."""
    from kdsam.data.intensity import parse_window
    from kdsam.infer.box_file import prompts_for, read_box_file
    from kdsam.infer.files import run_file

    source, store = args.input, _store_target(args.out)
    if not isinstance(source, Target) or not source.study or source.series:
        raise KdsamError(f"--input {source}: with a DICOMweb --out, give a study: dicomweb:URL/studies/UID")
    if store is None and args.out.exists() and not args.out.is_dir():
        raise KdsamError(f"--out {args.out}: with --input, --out is a folder or dicomweb:URL")
    window = parse_window(args.window)
    table = read_box_file(args.boxes) if args.boxes else None
    default = prompts_from(args)
    client = dicomweb.connect(source)
    series = dicomweb.image_series(client, source)
    if not series:
        raise KdsamError(f"{source}: the study holds no image series (only SEG, SR and the like)")
    model, failed = model_for(args, True), []
    for uid in series:
        target = Target(source.root, source.study, uid)
        try:
            with tempfile.TemporaryDirectory(prefix="kdsam-wado-") as scratch, _seg_folder(store, args.out) as folder:
                out = folder / f"{uid}.dcm"
                if out.exists() and not args.overwrite:
                    raise KdsamError(f"{out} exists: pass --overwrite to replace it")
                local = dicomweb.fetch_series(client, target, Path(scratch))
                prompts = prompts_for(Path(uid), table, default)
                record = run_file(
                    model,
                    local,
                    out,
                    prompts,
                    window,
                    args.batch_size,
                    None,
                    label_names(args, len(prompts.boxes3d) or 1),
                )
                _record_source(out, target)
                print(_store(store, out, record) if store else summary(out, record))
        except PacsError:
            raise
        except KdsamError as err:
            print(f"kdsam predict: skipped {err}", file=sys.stderr)
            failed.append(uid)
    print(f"{source}: {len(series) - len(failed)} of {len(series)} image series segmented, {len(failed)} failed")
    return 1 if failed else 0
