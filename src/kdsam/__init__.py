"""kdsam: distil Segment Anything into a small, fast CNN student for medical image segmentation."""

from kdsam.models import KDSam, build_student, load_teacher
from kdsam.models.loading import load_model
from kdsam.predictor import KDSamPredictor

__all__ = ["KDSam", "KDSamPredictor", "build_student", "load_model", "load_teacher"]
__version__ = "0.1.0"
