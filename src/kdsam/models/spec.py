"""MODEL strings: the one grammar every command (`--model`, `--models`, `--teacher`) and
`kdsam.load_model` accept.

    NAME[=CHECKPOINT]           a registered teacher (see kdsam.models.teachers.TEACHERS) with its
    teacher:NAME[=CHECKPOINT]   official checkpoint; litemedsam needs none (bundled weights)
    student:BACKBONE[@SIZE]     a fresh student: timm BACKBONE, SIZE px input (default 512), random weights
                                (for timing and tests; its results mean nothing)
    PATH                        a run folder or a model.pt written by kdsam (a trained student)
    PATH                        an ONNX export folder written by `kdsam export` (holds kdsam_onnx.json)

A path wins over a teacher name only when no teacher has that name, so `medsam` is always the
teacher; write `./medsam` for a folder of that name. Parsing touches the file system (to tell a
run folder from an export) but loads nothing: `kdsam.models.loading.load_model` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kdsam.errors import KdsamError

Kind = Literal["teacher", "student", "saved", "onnx"]
KINDS: tuple[Kind, ...] = ("teacher", "student", "saved", "onnx")
MODEL_FILE = "model.pt"
CARD_KEYS = ("card", "spec")  # files written before 2026-12 keep the card under "spec"
ONNX_CONFIG_FILE = "kdsam_onnx.json"  # kdsam.export.layout.CONFIG_FILE, without importing onnx to parse
DEFAULT_STUDENT_SIZE = 512
DESCRIPTIONS: dict[Kind, str] = {
    "teacher": "NAME[=CHECKPOINT] or teacher:NAME[=CHECKPOINT] (a registered teacher)",
    "student": "student:BACKBONE[@SIZE] (a fresh student with random weights; SIZE default 512)",
    "saved": "a run folder or model.pt (a trained student)",
    "onnx": "an ONNX export folder (kdsam export)",
}


def accepted(kinds: tuple[Kind, ...] = KINDS) -> str:
    """The forms of `kinds`, for one-line errors and --help."""
    from kdsam.models.teachers import TEACHERS

    forms = "; ".join(DESCRIPTIONS[k] for k in kinds)
    return forms + (f"; teachers: {', '.join(TEACHERS)}" if "teacher" in kinds else "")


@dataclass(frozen=True)
class ModelSpec:
    """One parsed MODEL string; `text` is what the user wrote."""

    kind: Kind
    text: str
    name: str = ""  # the teacher's name or the student's backbone
    checkpoint: str | None = None
    input_size: int | None = None
    path: Path | None = None

    @property
    def label(self) -> str:
        """A short name for tables and folder names: no checkpoint path, no trailing slash."""
        if self.kind == "teacher":
            return f"teacher:{self.name}"
        if self.kind == "student":
            return f"student:{self.name}@{self.input_size}"
        assert self.path is not None
        path = self.path.parent if self.path.name == MODEL_FILE else self.path
        return path.name or str(path)


def is_model_folder(path: Path) -> bool:
    """A folder a MODEL can name: a finished run (model.pt) or an ONNX export."""
    return path.is_dir() and ((path / MODEL_FILE).is_file() or (path / ONNX_CONFIG_FILE).is_file())


def _unknown(text: str, why: str) -> KdsamError:
    return KdsamError(f"{text!r}: {why}; a MODEL is {accepted()}")


def _teacher(text: str, body: str) -> ModelSpec:
    from kdsam.models.teachers import TEACHERS

    name, _, ckpt = body.partition("=")
    name = name.strip()
    if name not in TEACHERS:
        raise _unknown(text, f"no teacher named {name!r}")
    return ModelSpec("teacher", text, name, ckpt.strip() or None)


def _student(text: str) -> ModelSpec:
    backbone, _, size = text.removeprefix("student:").partition("@")
    if not backbone or (size and not size.isdigit()):
        raise _unknown(text, "write student:BACKBONE@SIZE with SIZE in pixels")
    import timm  # only here: parsing a teacher or a path must not pay for timm

    if not timm.is_model(backbone):
        raise _unknown(text, f"timm has no model {backbone!r}")
    input_size = int(size or DEFAULT_STUDENT_SIZE)
    if input_size % 32:
        raise _unknown(text, f"the student's input size {input_size} must be a multiple of 32")
    return ModelSpec("student", text, backbone, input_size=input_size)


def parse_model(text: str) -> ModelSpec:
    """A MODEL string -> its ModelSpec, or one line saying what is accepted."""
    from kdsam.models.teachers import TEACHERS

    text = str(text).strip()
    if not text:
        raise _unknown(text, "empty")
    if text.startswith("teacher:"):
        return _teacher(text, text.removeprefix("teacher:"))
    if text.startswith("student:"):
        return _student(text)
    if text.partition("=")[0].strip() in TEACHERS:
        return _teacher(text, text)
    path = Path(text).expanduser()
    if path.is_dir() and (path / ONNX_CONFIG_FILE).is_file():
        return ModelSpec("onnx", text, path=path)
    if path.is_file() or (path.is_dir() and (path / MODEL_FILE).is_file()):
        return ModelSpec("saved", text, path=path)
    if path.is_dir():
        raise _unknown(
            text,
            f"this folder holds neither {MODEL_FILE} (a finished run) nor {ONNX_CONFIG_FILE} (saved masks are "
            "scored with evaluate --predictions)",
        )
    raise _unknown(text, "no such teacher, file or folder")


def label_of(text: str) -> str:
    """The short label of a MODEL string as results name it (`litemedsam` and `teacher:litemedsam`
    are one model), or the string itself where it no longer parses (a moved run folder)."""
    try:
        return parse_model(text).label
    except KdsamError:
        return str(text).rstrip("/")


def is_student(result: dict[str, Any]) -> bool:
    """A benchmark row of a fresh (`student:`) or trained (run folder) student; rows written before
    they carried "kind" are told by name."""
    return result.get("kind", "student" if result["model"].startswith("student:") else "") in ("student", "saved")


def as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else parse_model(model)


def parse_models(text: str) -> list[ModelSpec]:
    """A comma-separated list (`bench --models`); every entry parsed before anything is loaded."""
    specs = [parse_model(t) for t in text.split(",") if t.strip()]
    if not specs:
        raise KdsamError(f"give at least one model; a MODEL is {accepted()}")
    return specs


def require_kind(spec: ModelSpec, kinds: tuple[Kind, ...], purpose: str) -> ModelSpec:
    """Refuse a model a command cannot use (e.g. `distill --teacher` on an ONNX export), in one line."""
    if spec.kind not in kinds:
        raise KdsamError(f"{spec.text!r} is {DESCRIPTIONS[spec.kind]}; {purpose} takes {accepted(kinds)}")
    return spec


def card_key(stored: object) -> str | None:
    """The key under which a model file's dict or an export's config keeps the model's card
    (`KDSam.card`), or None when it holds none."""
    return next((k for k in CARD_KEYS if isinstance(stored, dict) and k in stored), None)


def check_card(path: Path, card: object) -> dict[str, Any]:
    """A model file's card (`KDSam.card`), checked before a student is built from it (a damaged or
    foreign file could hold anything): a dict of kind "student", a backbone name and a positive
    whole input size."""
    if not isinstance(card, dict):
        raise KdsamError(f"{path}: not a kdsam model file (its card is a {type(card).__name__}, not a dict)")
    if card.get("kind") != "student":
        raise KdsamError(f"{path}: holds a {card.get('kind')!r} model, expected a student")
    backbone, size, resize = card.get("backbone"), card.get("input_size"), card.get("resize_mode")
    if not isinstance(backbone, str) or not backbone:
        raise KdsamError(f"{path}: its card's backbone {backbone!r} is not a model name")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise KdsamError(f"{path}: its card's input_size {size!r} is not a positive whole number")
    if resize not in (None, "longest", "squash"):
        raise KdsamError(f"{path}: its card's resize_mode {resize!r} is not longest or squash")
    return card
