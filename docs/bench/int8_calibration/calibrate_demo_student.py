import sys, types, shutil
from pathlib import Path
import kdsam.export.quantize as q
from onnxruntime.quantization import CalibrationMethod
from kdsam.data import open_dataset
from kdsam.eval.evaluate import ModelSegmenter, evaluate
from kdsam.export.onnx import export_onnx
from kdsam.export.onnx_predictor import load_export
from kdsam.export.quantize import Calibration
from kdsam.models.loading import load_saved_student
demo = Path("/tmp/demo-run")
spec = f"folder:{demo / 'data'}"
train = open_dataset(spec, "train", split_file=demo / "split.json")
test = open_dataset(spec, "test", split_file=demo / "split.json")
student = load_saved_student(demo / "run")
method, n = sys.argv[1], int(sys.argv[2])
q.CalibrationMethod = types.SimpleNamespace(MinMax=getattr(CalibrationMethod, method))
folder = Path(f"/tmp/int8-{method}-{n}"); shutil.rmtree(folder, ignore_errors=True)
images = [s.image for s, _ in zip(train.samples(), range(n), strict=False)]
export_onnx(student, folder, calibration=Calibration(images, f"{n} imgs"))
r = evaluate(ModelSegmenter(load_export(folder, "onnxruntime-int8"), "int8"), test, progress=False)["mean"]
print(method, n, "INT8 dice", round(r["dice"], 4))
