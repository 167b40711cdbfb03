"""Models: teachers (registry), the student, and the promptable `KDSam` they all are."""

from kdsam.models.sam import KDSam
from kdsam.models.student import StudentEncoder, build_student
from kdsam.models.teachers import TEACHERS, build_architecture, load_teacher

__all__ = ["TEACHERS", "KDSam", "StudentEncoder", "build_architecture", "build_student", "load_teacher"]
