"""The prompt mix on the demo: the demo's own stage-1 student fine-tuned again with boxes only, then
both students scored on the test split with boxes and 5 clicks. Run after `kdsam demo` has finished:
    python scripts/prompt_mix_boxes_only.py kdsam-demo OUT    # results: docs/demo/prompt_mix_ablation/
"""

import json
import shutil
import sys
from pathlib import Path

from kdsam.data import open_dataset
from kdsam.distill.prompting import parse_mix
from kdsam.distill.stage2 import finetune
from kdsam.distill.trainer import FitConfig
from kdsam.eval.evaluate import evaluate
from kdsam.models.loading import load_saved_student

demo, out = Path(sys.argv[1]), Path(sys.argv[2])
run = out / "run-boxonly"
shutil.rmtree(run, ignore_errors=True)
run.mkdir(parents=True)
for f in ("model-distill.pt", "split.json", "metrics.jsonl"):
    shutil.copy(demo / "run" / f, run / f)
cfg = json.loads((demo / "run" / "config.json").read_text())
cfg.pop("finetune", None)
(run / "config.json").write_text(json.dumps(cfg))
location = f"folder:{demo / 'data'}"
split = demo / "split.json"
train, val, test = (open_dataset(location, s, split_file=split) for s in ("train", "val", "test"))
finetune(
    run,
    train,
    val,
    cfg=FitConfig(epochs=15, lr=1e-4, batch_size=8, seed=0),
    cache_dir=demo / "cache",
    prompt_mix=parse_mix("box", 0),
)
rows = {}
for name, path in (("mix (default)", demo / "run"), ("boxes only", run)):
    model = load_saved_student(path)
    box = evaluate(model, test, progress=False)["mean"]
    clicks = evaluate(model, test, prompt="clicks:5", progress=False)["mean"]
    rows[name] = {
        "dice_box": round(box["dice"], 4),
        "iou_box": round(box["iou"], 4),
        "hd95_box": round(box["hd95"], 2),
        **{f"dice_{k}_clicks": round(clicks[f"dice@{k}"], 4) for k in range(1, 6)},
        "noc85": clicks["noc85"],
        "noc90": clicks["noc90"],
    }
print(json.dumps(rows, indent=1))
(out / "prompt_mix_ablation.json").write_text(json.dumps(rows, indent=2))
