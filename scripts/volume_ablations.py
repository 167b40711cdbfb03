"""Ablations on a synthetic CT set, each arm a real stage 1 + stage 2 from the bundled LiteMedSAM
teacher, scored in 3D (box protocol) and in the CVPR 2025 protocol (box, then 5 clicks):

- stage 1 on an unlabelled archive (`images:`, random-box decoder term) vs on the few labelled
  cases only, with the same stage 2 on the labelled cases and about as many stage-1 samples;
- the share of slices without foreground that stage 1 draws (`--background-slices`);
- stage 2 on the prompt mix vs on boxes only (on the labelled baseline; the stage-1 variants are
  compared after the cheaper boxes-only stage 2).

    python scripts/volume_ablations.py OUT            # resumable; every finished arm is kept
    python scripts/volume_ablations.py OUT --quick    # tiny sizes, to check the script

Not timed on an idle machine: on the 2 shared cores (load 4-9), with the arms split over two
processes of one torch thread each (--arms), the runs behind docs/bench/cpu took one to two hours.

Writes OUT/ablations.json (printed too) and OUT/ablations.md; docs/volumes.md and
docs/interactive3d.md quote them (docs/bench/cpu/volume-ablations.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from kdsam.data import open_dataset
from kdsam.data.registry import dataset_splits, volume_set
from kdsam.data.splits import make_split
from kdsam.data.volumes.slices import VolumeOptions
from kdsam.data.volumes.synthetic import write_synthetic_ct
from kdsam.distill.process import TrainingProcess
from kdsam.distill.prompting import DEFAULT_MIX, parse_mix
from kdsam.distill.run import RunDir
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from kdsam.distill.trainer import FitConfig
from kdsam.eval.cvpr25_run import evaluate_protocol
from kdsam.eval.volume_sets import evaluate_volume_set
from kdsam.models.loading import load_saved_student
from kdsam.models.teachers import load_teacher
from kdsam.utils.atomic import write_json, write_text

WINDOW = "soft-tissue"  # the labelled set's `auto` for CT; the archive names no modality, so say it


@dataclass
class Sizes:
    labelled_cases: int = 8  # 3 train, 1 val, the rest test
    archive_cases: int = 8
    shape: tuple[int, int, int] = (96, 96, 16)
    backbone: str = "resnet18"
    input_size: int = 256
    stage1_epochs_labelled: int = 12  # the archive arm gets the same number of steps
    stage2_epochs: int = 8
    batch_size: int = 8
    seed: int = 0  # of training (init, order, prompts); the data and splits are the same for every seed


QUICK = Sizes(labelled_cases=6, archive_cases=4, shape=(48, 48, 8), stage1_epochs_labelled=2, stage2_epochs=1)


def _data(out: Path, sizes: Sizes) -> dict[str, Any]:
    """The labelled set (nnU-Net layout, split 3/1/rest by case) and the archive (its images only)."""
    labelled, archive = out / "Dataset001_Labelled", out / "Dataset002_Archive"
    if not (labelled / "dataset.json").exists():
        write_synthetic_ct(labelled, sizes.labelled_cases, sizes.shape, seed=0)
    if not (archive / "dataset.json").exists():
        write_synthetic_ct(archive, sizes.archive_cases, sizes.shape, seed=1)
    names = sorted(p.name.removesuffix("_0000.nii.gz") for p in (labelled / "imagesTr").glob("*.nii.gz"))
    split = {"train": names[:3], "val": names[3:4], "test": names[4:]}
    write_json(out / "split-labelled.json", split)
    archive_location = f"images:{archive / 'imagesTr'}"
    options = VolumeOptions(window=WINDOW, cache_dir=out / "cache")
    names = [c.name for c in volume_set(archive_location, options).cases]
    write_json(out / "split-archive.json", make_split(names, 0, (0.9, 0.1, 0.0)))
    return {"labelled": f"nnunet:{labelled}", "archive": archive_location, "options": options}


def _sets(location: str, split_file: Path, options: VolumeOptions) -> tuple[Any, Any, dict[str, list[str]]]:
    train, val = (open_dataset(location, s, split_file=split_file, volume=options) for s in ("train", "val"))
    return train, val, dataset_splits(location, 0, split_file, options)


def _stage1(out: Path, name: str, location: str, split_file: Path, options: VolumeOptions, teacher: Any, sizes: Sizes,
            epochs: int, background: float) -> Path:  # fmt: skip
    run = out / "runs" / name
    train, val, splits = _sets(location, split_file, options)
    if not RunDir(run).is_done("distill"):
        intensity = {"window": WINDOW, "channel": 0, "modality": "CT"}
        distill(
            teacher, train, val, run, backbone=sizes.backbone, input_size=sizes.input_size, cache_dir=out / "cache",
            cfg=FitConfig(epochs=epochs, lr=1e-3, batch_size=sizes.batch_size, seed=sizes.seed), splits=splits,
            resume=RunDir(run).checkpoint("distill").is_file(), process=TrainingProcess(torch.device("cpu")),
            background=background, intensity=intensity,
        )  # fmt: skip
    return run


def _stage2(out: Path, stage1_run: Path, name: str, data: dict[str, Any], sizes: Sizes, mix: str, epochs: int) -> Path:
    """A copy of the stage-1 run, fine-tuned on the labelled training cases."""
    run = out / "runs" / name
    if not RunDir(run).is_done("finetune"):
        run.mkdir(parents=True, exist_ok=True)
        for f in ("model-distill.pt", "split.json", "metrics.jsonl"):
            if (stage1_run / f).exists() and not (run / f).exists():
                (run / f).write_bytes((stage1_run / f).read_bytes())
        config = json.loads((stage1_run / "config.json").read_text())
        config.pop("finetune", None)
        write_json(run / "config.json", config)
        split_file = out / "split-labelled.json"
        train, val, splits = _sets(data["labelled"], split_file, data["options"])
        finetune(
            run, train, val, cfg=FitConfig(epochs=epochs, lr=1e-4, batch_size=sizes.batch_size, seed=sizes.seed),
            splits=splits, resume=RunDir(run).checkpoint("finetune").is_file(), cache_dir=out / "cache",
            process=TrainingProcess(torch.device("cpu")), prompt_mix=parse_mix(mix),
        )  # fmt: skip
    return run


def _scores(out: Path, name: str, model: Any, data: dict[str, Any], test: list[str], clicks: bool) -> dict[str, Any]:
    """3D box-protocol means on the test cases; with `clicks` the CVPR 2025 protocol's too (box, then
    5 clicks: six propagations per label, so only where the prompt mix is the question)."""
    memo = out / "scores" / f"{name}.json"
    if memo.exists():
        return json.loads(memo.read_text())
    box = evaluate_volume_set(model, volume_set(data["labelled"], data["options"]), test)
    row = {"box3d": box["mean"], "per_label_dice": {k: v["dice"] for k, v in box["per_label"].items()}}
    if clicks:
        cvpr25 = evaluate_protocol(
            {name: model}, data["labelled"], out / "cvpr25" / name, overwrite=True, names=set(test)
        )
        row["cvpr25"] = cvpr25["models"][name]["mean"]
    write_json(memo, row)
    return row


def _stage1_items(location: str, split_file: Path, options: VolumeOptions, background: float) -> int:
    """Slices stage 1 trains on: those with foreground, a share of the rest; every slice unlabelled."""
    train = set(json.loads(split_file.read_text())["train"])
    cases = [c for c in volume_set(location, options).cases if c.name in train]
    if not any(c.labelled for c in cases):
        return sum(c.depth for c in cases)
    fg = sum(sum(c.meta["foreground"]) for c in cases)
    return fg + round(background * (sum(c.depth for c in cases) - fg))


def _steps_epochs(labelled_items: int, archive_items: int, labelled_epochs: int) -> int:
    """Stage-1 epochs on the archive that match the labelled arm's number of samples seen."""
    return max(1, math.ceil(labelled_epochs * labelled_items / archive_items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, numbers mean nothing")
    parser.add_argument(
        "--arms",
        help="run only these, comma-separated (labelled-background-0.1, archive-unlabelled, labelled-background-0, "
        "teacher): two processes can then share the work; a last run without --arms collects every arm",
    )
    parser.add_argument(
        "--stage2", help="run only these stage-2 variants: boxes-only, mix, mix-2x-epochs, boxes-only-2x-epochs"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (use another OUT per seed)")
    args = parser.parse_args()
    sizes = replace(QUICK if args.quick else Sizes(), seed=args.seed)
    out = args.out
    wanted = set(args.arms.split(",")) if args.arms else set()
    stage2_wanted = set(args.stage2.split(",")) if args.stage2 else set()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(sizes.seed)
    data = _data(out, sizes)
    teacher = load_teacher("litemedsam")
    split_l, split_u = out / "split-labelled.json", out / "split-archive.json"
    test = json.loads(split_l.read_text())["test"]
    items = {
        "labelled": _stage1_items(data["labelled"], split_l, data["options"], 0.1),
        "archive": _stage1_items(data["archive"], split_u, data["options"], 0.1),
    }
    u_epochs = _steps_epochs(items["labelled"], items["archive"], sizes.stage1_epochs_labelled)

    arms: dict[str, dict[str, Any]] = {}
    stage1 = {
        "labelled, background 0.1": (data["labelled"], split_l, sizes.stage1_epochs_labelled, 0.1),
        "archive (unlabelled)": (data["archive"], split_u, u_epochs, 0.1),
        "labelled, background 0": (data["labelled"], split_l, sizes.stage1_epochs_labelled, 0.0),
    }
    for name, (location, split_file, epochs, background) in stage1.items():
        slug = "-".join(name.replace(",", "").replace("(", "").replace(")", "").split())
        if wanted and slug not in wanted:
            continue
        s1 = _stage1(out, f"s1-{slug}", location, split_file, data["options"], teacher, sizes, epochs, background)
        trained = json.loads((s1 / "config.json").read_text())["distill"]["train"]
        # the prompt mix is asked once; stage-1 variants are compared after the cheaper boxes-only stage 2
        baseline = background == 0.1 and location == data["labelled"]
        # the mix spreads stage 2 over four kinds of prompt: does it catch up given twice the epochs?
        e2 = sizes.stage2_epochs
        mixes = {"boxes-only": ("box", e2)}
        if baseline:
            mixes |= {
                "mix": (DEFAULT_MIX, e2),
                "mix-2x-epochs": (DEFAULT_MIX, 2 * e2),
                "boxes-only-2x-epochs": ("box", 2 * e2),
            }
        for mix_name, (mix, e) in mixes.items():
            if stage2_wanted and mix_name not in stage2_wanted:
                continue
            model = load_saved_student(_stage2(out, s1, f"s2-{slug}-{mix_name}", data, sizes, mix, e))
            arms[f"{name}; stage 2 {mix_name}"] = {
                "stage1": {
                    "data": location.split(":")[0],
                    "epochs": epochs,
                    "background": background,
                    "n_by_kind": trained["n_by_kind"],
                    "background_slices_left_out": trained["background_slices_left_out"],
                },
                "stage2": {"prompt_mix": mix, "epochs": e},
                **_scores(out, f"{slug}-{mix_name}", model, data, test, clicks=baseline),
            }
    if not wanted or "teacher" in wanted:
        arms["teacher:litemedsam"] = _scores(out, "teacher", teacher, data, test, clicks=True)
    report = {
        "sizes": asdict(sizes),
        "test_cases": test,
        "stage1_items": items,
        "arms": arms,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
    }
    write_json(out / "ablations.json", report)
    write_text(out / "ablations.md", _table(arms))
    print(json.dumps(report, indent=1))


def _table(arms: dict[str, dict[str, Any]]) -> str:
    head = "| arm | 3D Dice (box) | NSD 2 mm | HD95 mm | DSC_AUC | NSD_AUC | DSC_Final |\n" + "|---" * 7 + "|\n"
    rows = []
    for name, row in arms.items():
        box, cv = row["box3d"], row.get("cvpr25")
        clicks = f"{cv['DSC_AUC']:.3f} | {cv['NSD_AUC']:.3f} | {cv['DSC_Final']:.3f}" if cv else "- | - | -"
        rows.append(f"| {name} | {box['dice']:.3f} | {box['nsd']:.3f} | {box['hd95_mm']:.2f} | {clicks} |")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
