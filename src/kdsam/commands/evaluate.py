"""`kdsam evaluate`: score models (or saved predictions) on datasets; metrics.json, CSV, cases, comparison."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdsam.commands.options import add_device_argument, add_volume_arguments, volume_options
from kdsam.errors import KdsamError

if TYPE_CHECKING:  # the work's modules load torch and the datasets: `kdsam evaluate --help` needs neither
    from kdsam.eval.evaluate import Segmenter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a MODEL (docs/models.md): teacher NAME[=CHECKPOINT], run folder, model.pt, ONNX export "
        "folder; repeat for several",
    )
    p.add_argument(
        "--predictions",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of saved masks named <sample name>.png (a model from elsewhere); repeatable",
    )
    p.add_argument(
        "--gts",
        type=Path,
        metavar="DIR",
        help="score --predictions against this folder of CVPR24 npz cases (gts) or label volumes (NIfTI, MHA, "
        "NRRD), in 3D",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KIND:PATH",
        help="dataset KIND:PATH (kvasir, isic2017, hc18, busi, folder, synthetic; volumes: nnunet, msd, npz, "
        "scored in 3D from each label's 3D box); repeatable",
    )
    p.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        help="default: test when a --model is given, else (saved predictions only) every image that has one",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="score saved predictions that cover only part of the images (refused by default: the mean "
        "would not be comparable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    p.add_argument("--split-file", help="JSON {train, val, test: [names]} overriding the seeded split")
    p.add_argument(
        "--box-mode",
        default="components",
        choices=["components", "all"],
        help="one box per component (default) or one box around all of them (the paper's)",
    )
    p.add_argument("--min-area", type=int, default=100, help="components smaller than this get no box (pixels)")
    p.add_argument(
        "--prompt",
        default="box",
        help="box (default), point, clicks:N or box+clicks:N: simulated clicks, Dice per click and NoC@85/90",
    )
    p.add_argument(
        "--protocol",
        choices=["cvpr25"],
        help="cvpr25: the CVPR 2025 interactive 3D protocol on a volume --data (a 3D box, then 5 simulated clicks; "
        "DSC/NSD per step, DSC_AUC, NSD_AUC, finals, seconds per step; docs/interactive3d.md)",
    )
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
    p.add_argument("--cache-dir", help="where volume datasets' slice stores live (default $KDSAM_CACHE)")
    add_volume_arguments(p)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Source:
    """One --model or --predictions: its label in tables, its folder name, and a loader called once, when needed."""

    label: str
    slug: str
    load: Callable[[], Segmenter]


def _sources(args: argparse.Namespace) -> list[Source]:
    """Every --model parsed (an unknown one stops here, before any work), then every --predictions."""
    from kdsam.eval.evaluate import PredictionFolder, as_segmenter
    from kdsam.models.loading import load_predictor
    from kdsam.models.spec import parse_model

    if not args.model and not args.predictions:
        raise KdsamError("give --model MODEL or --predictions DIR (or several)")
    if args.predictions and len(args.data) > 1:
        raise KdsamError("--predictions names masks by sample name, so it takes exactly one --data")
    labels = args.model + args.predictions
    if len(set(labels)) < len(labels):
        raise KdsamError("each --model / --predictions may be given once")
    sources = [
        Source(m.text, _slug(m.label), lambda m=m: as_segmenter(load_predictor(m, args.device), m.text))
        for m in map(parse_model, args.model)
    ]
    sources += [Source(d, _slug(Path(d).name or d), lambda d=d: PredictionFolder(d)) for d in args.predictions]
    return sources


def _scored_by_split(result: dict, location: str, args: argparse.Namespace, most: int = 8) -> str:
    """Which images were scored, grouped by the split each belongs to: `train 4 (a, b, ...), test 1 (c)`."""
    from kdsam.data.registry import dataset_splits

    splits = dataset_splits(location, args.seed, args.split_file)
    where = {name: s for s, names in splits.items() for name in names}
    groups: dict[str, list[str]] = {}
    for row in result["per_image"]:
        groups.setdefault(where.get(row["name"], "no split"), []).append(row["name"])
    return ", ".join(
        f"{s} {len(names)} ({', '.join(names[:most])}{', ...' if len(names) > most else ''})"
        for s, names in groups.items()
    )


def run(args: argparse.Namespace) -> int:
    from kdsam.data.registry import is_volume_location, open_dataset, require_labelled
    from kdsam.eval.compare import comparison, dataset_label, to_markdown, write_comparison
    from kdsam.eval.evaluate import check_writable, run_evaluation
    from kdsam.eval.interactive import parse_prompt
    from kdsam.report.clicks import CLICKS_PLOT, dice_vs_clicks_plot

    out = Path(args.out)
    if args.protocol == "cvpr25":
        return _run_cvpr25(args, out)
    protocol = parse_prompt(args.prompt)
    if args.gts is not None:
        return _run_cases(args, out)
    if not args.data:
        raise KdsamError("give --data KIND:PATH (or --predictions DIR with --gts DIR for volumes and npz cases)")
    for location in args.data:
        require_labelled(location, "kdsam evaluate")
    if any(map(is_volume_location, args.data)):
        return _run_volumes(args, out)
    sources = _sources(args)
    chosen = args.split or ("test" if args.model else "all")
    split = None if chosen == "all" else chosen
    datasets = {s: open_dataset(s, split, seed=args.seed, split_file=args.split_file) for s in args.data}
    pairs = [(source, location) for source in sources for location in args.data]
    several = len(pairs) > 1
    folders = {
        (source.label, location): out / f"{source.slug}__{_slug(dataset_label(location))}" if several else out
        for source, location in pairs
    }
    if len(set(folders.values())) < len(folders):
        raise KdsamError("two models or datasets share a folder name; evaluate them into separate --out folders")
    for folder in folders.values():
        check_writable(folder, args.overwrite)

    results, loaded = [], {}
    for source, location in pairs:
        label = source.label
        if label not in loaded:
            loaded[label] = source.load()
        folder = folders[(label, location)]
        result = run_evaluation(
            loaded[label],
            datasets[location],
            folder,
            overwrite=args.overwrite,
            allow_missing=args.allow_missing,
            box_mode=args.box_mode,
            min_area=args.min_area,
            jitter_seed=args.jitter_seed,
            prompt=args.prompt,
            tolerance_px=args.nsd_tolerance,
            tolerance_mm=args.nsd_tolerance_mm,
            save_predictions=folder / "predictions" if args.save_predictions else None,
            settings={"split_seed": args.seed, "split_file": args.split_file},
        )
        results.append(result)
        kinds = Counter(s["kind"] for s in result["skipped"])
        reasons = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items()))
        skipped = f"; skipped {result['n_skipped']} ({reasons}; reasons in metrics.json)" if kinds else ""
        print(f"{label} on {location}: {result['n_images']} images scored{skipped} -> {folder}")
        which = chosen if args.split else f"{chosen}, the default"
        print(f"  scored ({which}): {_scored_by_split(result, location, args)}")
        for k, scores in result.get("per_label", {}).items():
            print(f"  label {k}: Dice {scores['mean']['dice']:.4f} over {scores['n_images']} images")
    print()
    print(to_markdown(comparison(results)))
    if several:
        write_comparison(results, out)
    if protocol.interactive:
        print(f"Dice after each click: {dice_vs_clicks_plot(results, out / CLICKS_PLOT)}")
        print(f"comparison table: {out / 'comparison.md'} (also .html, .json)")
    print(f"per evaluation: metrics.json, per_image.csv, cases.png under {out}")
    return 0


def _run_cases(args: argparse.Namespace, out: Path) -> int:
    """Volumes and challenge cases: one predictions folder against one truth folder."""
    from kdsam.eval.cases import evaluate_cases

    if len(args.predictions) != 1 or args.model or args.data:
        raise KdsamError("--gts scores exactly one --predictions DIR (make it with kdsam predict --input)")
    result = evaluate_cases(Path(args.predictions[0]), args.gts, out, args.overwrite, args.nsd_tolerance_mm)
    if not result["n_cases"] and result["skipped"]:
        first = result["skipped"][0]["reason"]
        raise KdsamError(f"no case could be scored ({result['n_skipped']} skipped; the first: {first})")
    means = ", ".join(f"{k} {v:.4f}" for k, v in result["mean"].items() if v is not None)
    skipped = f"; skipped {result['n_skipped']} (reasons in metrics.json)" if result["n_skipped"] else ""
    print(f"{result['n_cases']} cases scored ({result['kind']}): {means}{skipped} -> {out}")
    return 0


def _run_volumes(args: argparse.Namespace, out: Path) -> int:
    """Volume datasets: every --model on the split's cases, in 3D, side by side."""
    from kdsam.data.registry import dataset_splits, is_volume_location, volume_set
    from kdsam.eval.evaluate import check_writable
    from kdsam.eval.volume_sets import evaluate_volume_set, number, side_by_side, write_result
    from kdsam.models.loading import load_model
    from kdsam.models.sam import KDSam
    from kdsam.models.spec import parse_model
    from kdsam.utils.atomic import write_text
    from kdsam.utils.device import resolve_device

    if not all(map(is_volume_location, args.data)) or len(args.data) != 1:
        raise KdsamError("a volume dataset (nnunet:, msd:, npz:) is evaluated on its own: give exactly one --data")
    if args.predictions or not args.model:
        raise KdsamError("volume datasets score --model MODEL (saved NIfTI predictions: --predictions DIR --gts DIR)")
    location, opts = args.data[0], volume_options(args)
    split = args.split or "test"
    cases = [c.name for c in volume_set(location, opts).cases]
    if split != "all":
        cases = dataset_splits(location, args.seed, args.split_file, opts)[split]
    several = len(args.model) > 1
    folders = {m: out / _slug(parse_model(m).label) if several else out for m in args.model}
    for folder in folders.values():
        check_writable(folder, args.overwrite)
    results = {}
    for text, folder in folders.items():
        model = load_model(text)
        if isinstance(model, KDSam):  # an ONNX export's predictor runs where onnxruntime does
            model = model.to(resolve_device(args.device))
        result = evaluate_volume_set(model, volume_set(location, opts), cases, args.nsd_tolerance_mm)
        result.update(model=text, data=location, split=split, split_seed=args.seed, split_file=args.split_file)
        write_result(result, folder)
        results[text] = result
        mean = result["mean"]
        print(f"{text} on {location} ({split}): {result['n_cases']} cases, Dice {number(mean['dice'])} -> {folder}")
        for name, scores in result["per_label"].items():
            print(f"  {name}: Dice {number(scores['dice'])} over {scores['n_cases']} cases")
    table = side_by_side(results)
    print()
    print(table)
    if several:
        write_text(out / "comparison.md", table + "\n")
    return 0


def _run_cvpr25(args: argparse.Namespace, out: Path) -> int:
    """Every --model through the CVPR25 protocol on one volume --data; a table and a DSC-per-step plot."""
    from kdsam.data.registry import dataset_splits
    from kdsam.eval.cvpr25_run import PLOT_FILE, TABLE_FILE, evaluate_protocol
    from kdsam.models.loading import load_predictor
    from kdsam.models.spec import parse_model

    if not args.model or args.predictions or len(args.data) != 1:
        raise KdsamError("--protocol cvpr25 runs --model MODEL (repeatable) on exactly one volume --data KIND:PATH")
    specs = [parse_model(m) for m in args.model]
    split = args.split if args.split != "all" else None
    names = set(dataset_splits(args.data[0], args.seed, args.split_file)[split]) if split else None
    models = {}
    for spec in specs:
        predictor = load_predictor(spec, args.device)
        models[spec.text] = predictor if spec.kind == "onnx" else predictor.model
    metrics = evaluate_protocol(models, args.data[0], out, args.overwrite, names)
    skipped = f"; skipped {len(metrics['skipped'])} (reasons in metrics.json)" if metrics["skipped"] else ""
    print(f"cvpr25 on {args.data[0]}: {metrics['n_cases']} cases{skipped} -> {out}")
    print((out / TABLE_FILE).read_text(), end="")
    print(f"DSC per step: {out / PLOT_FILE}")
    return 0
