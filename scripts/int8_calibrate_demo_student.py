"""INT8 Dice of the demo's student by calibration method and image count, on the demo's test split.
Results: docs/bench/cpu/int8_calibration.json.

    python scripts/int8_calibrate_demo_student.py DEMO_FOLDER METHOD N     # e.g. kdsam-demo MinMax 33
"""

import shutil
import sys
import tempfile
from pathlib import Path

from kdsam.data import open_dataset
from kdsam.eval.evaluate import ModelSegmenter, evaluate
from kdsam.export.onnx import export_onnx
from kdsam.export.onnx_predictor import load_export
from kdsam.export.quantize import Calibration
from kdsam.models.loading import load_saved_student

demo, method, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
location = f"folder:{demo / 'data'}"
train = open_dataset(location, "train", split_file=demo / "split.json")
test = open_dataset(location, "test", split_file=demo / "split.json")
images = [s.image for s, _ in zip(train.samples(), range(n), strict=False)]
folder = Path(tempfile.mkdtemp()) / "export"
export_onnx(load_saved_student(demo / "run"), folder, calibration=Calibration(images, f"{n} images", method))
result = evaluate(ModelSegmenter(load_export(folder, "onnxruntime-int8"), "int8"), test, progress=False)
print(method, n, "INT8 Dice", round(result["mean"]["dice"], 4))
shutil.rmtree(folder.parent)
