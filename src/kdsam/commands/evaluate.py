"""`kdsam evaluate`: score models (or saved predictions) on datasets; metrics.json, CSV, cases, comparison."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kdsam.commands.options import add_device_argument, resolve_device
from kdsam.data.registry import open_dataset
from kdsam.errors import KdsamError
from kdsam.eval.compare import comparison, dataset_label, to_markdown, write_comparison
from kdsam.eval.evaluate import PredictionFolder, Segmenter, as_segmenter, check_writable, run_evaluation


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="run folder, model.pt, or teacher:NAME[=CHECKPOINT]; repeat for several",
    )
    p.add_argument(
        "--predictions",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of saved masks named <sample name>.png (a model from elsewhere); repeatable",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SPEC",
        help="dataset KIND:PATH (kvasir, isic2017, hc18, busi, folder, synthetic); repeatable",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="default: test")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    p.add_argument("--split-file", help="JSON {train, val, test: [names]} overriding the seeded split")
    p.add_argument(
        "--box-mode",
        default="components",
        choices=["components", "all"],
        help="one box per component (default) or one box around all of them (the paper's)",
    )
    p.add_argument("--min-area", type=int, default=100, help="components smaller than this get no box (pixels)")
    p.add_argument("--jitter-seed", type=int, help="jitter the boxes, seeded (default: exact boxes)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in pixels (default 2)")
    p.add_argument(
        "--nsd-tolerance-mm",
        type=float,
        default=2.0,
        help="NSD tolerance in mm, where the pixel size is known (default 2)",
    )
    add_device_argument(p)
    p.add_argument("--save-predictions", action="store_true", help="also write each predicted mask to OUT/predictions")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _model_slug(label: str) -> str:
    """teacher:sam_vit_b=/ckpt/x.pth -> teacher-sam_vit_b; /runs/exp1 -> exp1."""
    if label.startswith("teacher:"):
        return _slug(label.partition("=")[0])
    return _slug(Path(label).name or label)


def _sources(args: argparse.Namespace) -> list[tuple[str, Callable[[], Segmenter]]]:
    """(label, loader) per model or predictions folder; loaders are called once, only when needed."""
    if not args.model and not args.predictions:
        raise KdsamError("give --model MODEL or --predictions DIR (or several)")
    if args.predictions and len(args.data) > 1:
        raise KdsamError("--predictions names masks by sample name, so it takes exactly one --data")
    labels = args.model + args.predictions
    if len(set(labels)) < len(labels):
        raise KdsamError("each --model / --predictions may be given once")
    device = args.device

    def model_loader(spec: str) -> Callable[[], Segmenter]:
        def load() -> Segmenter:
            from kdsam.models.fast import optimize_for_inference
            from kdsam.models.loading import load_model

            target = resolve_device(device)
            model = optimize_for_inference(load_model(spec), target)
            return as_segmenter(model, spec)

        return load

    sources = [(m, model_loader(m)) for m in args.model]
    sources += [(d, lambda d=d: PredictionFolder(d)) for d in args.predictions]
    return sources


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    sources = _sources(args)
    split = None if args.split == "all" else args.split
    datasets = {s: open_dataset(s, split, seed=args.seed, split_file=args.split_file) for s in args.data}
    pairs = [(label, load, spec) for label, load in sources for spec in args.data]
    several = len(pairs) > 1
    folders = {
        (label, spec): out / f"{_model_slug(label)}__{_slug(dataset_label(spec))}" if several else out
        for label, _, spec in pairs
    }
    if len(set(folders.values())) < len(folders):
        raise KdsamError("two models or datasets share a folder name; evaluate them into separate --out folders")
    for folder in folders.values():
        check_writable(folder, args.overwrite)

    results, loaded = [], {}
    for label, load, spec in pairs:
        if label not in loaded:
            loaded[label] = load()
        folder = folders[(label, spec)]
        result = run_evaluation(
            loaded[label],
            datasets[spec],
            folder,
            overwrite=args.overwrite,
            box_mode=args.box_mode,
            min_area=args.min_area,
            jitter_seed=args.jitter_seed,
            tolerance_px=args.nsd_tolerance,
            tolerance_mm=args.nsd_tolerance_mm,
            save_predictions=folder / "predictions" if args.save_predictions else None,
            settings={"split_seed": args.seed, "split_file": args.split_file},
        )
        results.append(result)
        kinds = Counter(s["kind"] for s in result["skipped"])
        reasons = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items()))
        skipped = f"; skipped {result['n_skipped']} ({reasons}; reasons in metrics.json)" if kinds else ""
        print(f"{label} on {spec}: {result['n_images']} images scored{skipped} -> {folder}")
    print()
    print(to_markdown(comparison(results)))
    if several:
        write_comparison(results, out)
        print(f"comparison table: {out / 'comparison.md'} (also .html, .json)")
    print(f"per evaluation: metrics.json, per_image.csv, cases.png under {out}")
    return 0
