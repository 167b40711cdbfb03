"""Volume sessions: a volume file (NIfTI, MHA, NRRD), a DICOM series or a 3D npz opened once, its
slices embedded on demand and ahead in the background, prompted with 3D boxes (the LiteMedSAM
protocol) refined by clicks on any slice (the interactive 3D rule of kdsam.infer.interactive3d), and
its label map written back as NIfTI on the input's grid.

Every model call goes through the engine's lock, so the background embedding of one volume and the
prompts of every session interleave slice by slice and never see each other's tensors.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import tempfile
import threading
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data import intensity, itk_io, medical
from kdsam.errors import BadFileError, KdsamError, one_line
from kdsam.infer.cvpr25 import Box3D, ClassPrompts
from kdsam.infer.interactive3d import segment_class
from kdsam.infer.volume import Decoded, FramePrompt, SliceEmbeddings, SliceModel, check_box3d, slice_model
from kdsam.predictor import KDSamPredictor
from kdsam.serve.engine import Engine
from kdsam.serve.inputs import MAX_PIXELS, BadRequest

MAX_VOXELS = 1 << 28  # 256 M: a 512x512x1000 CT; the uint8 stack and the float volume both stay in memory
# (each slice is bounded by the server's --max-pixels, as a photo is)
DECODE_CACHE_BYTES = 64 * 2**20  # a volume's remembered decodes: 256 masks of 512x512 (a click's replay)
_EMBEDDING: weakref.WeakSet[Any] = weakref.WeakSet()  # sessions whose slices are being embedded


class LockedSlices:
    """A `SliceModel` whose every model call holds the engine's model lock (the predictor is shared),
    and which remembers its latest decodes, up to `cache_bytes`: the page sends an object's box and
    all its clicks with each click, so replaying them decodes only what changed. The same inputs give
    the same answer, shared read-only (the 3D code copies masks into its volume, never writes into one)."""

    def __init__(self, inner: SliceModel, lock: threading.Lock, cache_bytes: int = DECODE_CACHE_BYTES) -> None:
        self.inner, self.lock = inner, lock
        self.img_size, self.transform = inner.img_size, inner.transform
        self.batch_size, self.workers = inner.batch_size, 1
        self.cache_bytes, self.held_bytes = cache_bytes, 0
        # key -> (the embedding, kept so that its id stays its own; the answer; its bytes), oldest first
        self.decoded: OrderedDict[tuple, tuple[Any, Any, int]] = OrderedDict()
        self.cache_lock = threading.Lock()  # not the model lock: a replay is not queued behind the encoder

    def embed(self, images: Sequence[np.ndarray]) -> list[Any]:
        with self.lock:
            return self.inner.embed(images)

    def decode_box(self, embedding: Any, frame_box: np.ndarray, input_size: Any, original_size: Any) -> np.ndarray:
        key = ("box", id(embedding), np.asarray(frame_box, np.float32).tobytes(), *input_size, *original_size)
        return self._remembered(
            key, embedding, lambda: self.inner.decode_box(embedding, frame_box, input_size, original_size)
        )

    def decode_prompts(self, embedding: Any, prompt: FramePrompt, input_size: Any, original_size: Any) -> Decoded:
        key = (
            "prompts",
            id(embedding),
            np.asarray(prompt.points, np.float32).tobytes(),
            np.asarray(prompt.labels, np.int64).tobytes(),
            None if prompt.box is None else np.asarray(prompt.box, np.float32).tobytes(),
            None if prompt.mask is None else hashlib.sha256(np.ascontiguousarray(prompt.mask, np.float32)).digest(),
            *input_size,
            *original_size,
        )
        return self._remembered(
            key, embedding, lambda: self.inner.decode_prompts(embedding, prompt, input_size, original_size)
        )

    def _remembered(self, key: tuple, embedding: Any, decode: Callable[[], Any]) -> Any:
        with self.cache_lock:
            if key in self.decoded:
                self.decoded.move_to_end(key)
                return self.decoded[key][1]
        with self.lock:
            answer = decode()
        arrays = [answer] if isinstance(answer, np.ndarray) else [answer.mask, answer.logits]
        for array in arrays:
            array.flags.writeable = False
        size = sum(a.nbytes for a in arrays)
        with self.cache_lock:
            if key not in self.decoded:
                self.decoded[key] = (embedding, answer, size)
                self.held_bytes += size
            while self.held_bytes > self.cache_bytes:
                self.held_bytes -= self.decoded.popitem(last=False)[1][2]
        return answer


@dataclass(eq=False)  # identity: kept in a weak set
class VolumeSession:
    """One opened volume: its (D, H, W) uint8 slices, the volume it came from (grid for the NIfTI
    written back), the intensity mapping applied, and its slice embeddings."""

    name: str
    reference: medical.Volume
    window: dict[str, Any]
    embeddings: SliceEmbeddings
    stopped: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None

    @property
    def stack(self) -> np.ndarray:
        return self.embeddings.stack

    @property
    def embedded(self) -> int:
        return len(self.embeddings.cache)

    def embed_ahead(self) -> None:
        """Embed every slice, the middle first and then outwards (where boxes are drawn first), until
        done or the session is dropped; prompts interleave through the model lock."""
        depth = len(self.stack)
        middle = depth // 2
        order = sorted(range(depth), key=lambda z: (abs(z - middle), z))
        for z in order:
            if self.stopped.is_set():
                return
            self.embeddings.get(z)


def predictor_slices(engine: Engine) -> SliceModel:
    """The engine's model seen slice by slice: a `KDSamPredictor`'s KDSam, or an ONNX export."""
    predictor = engine.predictor
    inner = slice_model(predictor.model if isinstance(predictor, KDSamPredictor) else predictor)
    return LockedSlices(inner, engine.model_lock)


def display_name(filenames: Sequence[str], given: str | None) -> str:
    """A name for downloads: the one the page gives (a folder's), else the first file's stem."""
    raw = given or (Path(filenames[0]).name if filenames else "volume")
    raw = medical.drop_suffix(raw, (*medical.VOLUME_SUFFIXES, ".npz", *medical.DICOM_SUFFIXES))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "volume"


def _npz_volume(path: Path) -> tuple[medical.Volume, np.ndarray]:
    """A 3D npz (`imgs` DxHxW, 0..255; `spacing` along D, H, W where present) as a volume whose grid
    is its array, plus its uint8 slices. Object arrays are never unpickled."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "imgs" not in npz.files:
                raise BadFileError(f"{path.name}: no 'imgs' array (has {', '.join(npz.files) or 'nothing'})")
            imgs = np.asarray(npz["imgs"])
            spacing = np.asarray(npz["spacing"], np.float64).ravel() if "spacing" in npz.files else None
    except (OSError, ValueError, EOFError) as err:
        raise BadFileError(f"{path.name}: unreadable npz ({one_line(err)})") from err
    if imgs.ndim != 3 or imgs.shape[-1] in (3, 4):
        raise BadFileError(f"{path.name}: 'imgs' of shape {imgs.shape}; a volume npz holds DxHxW slices")
    stack = np.clip(np.nan_to_num(imgs), 0, 255).astype(np.uint8)
    sizes = spacing[::-1] if spacing is not None and len(spacing) == 3 and np.all(spacing > 0) else np.ones(3)
    affine = np.diag([*sizes, 1.0])
    return medical.Volume(path, np.ascontiguousarray(stack.transpose(2, 1, 0)), affine), stack


def check_size(name: str, shape: tuple[int, ...], max_pixels: int) -> None:
    """A (D, H, W) volume's slices within `max_pixels` each (the bound a photo has) and the whole
    within MAX_VOXELS, else a one-line 413."""
    depth, h, w = shape[:3]
    if h * w > max_pixels:
        raise BadRequest(413, f"{name}: slices of {w}x{h} pixels are over the {max_pixels} pixel limit (--max-pixels)")
    if depth * h * w > MAX_VOXELS:
        raise BadRequest(413, f"{name}: a volume of {w}x{h}x{depth} voxels is over the {MAX_VOXELS} voxel limit")


def read_upload(
    folder: Path, paths: Sequence[Path], window: str, max_pixels: int = MAX_PIXELS
) -> tuple[medical.Volume, np.ndarray, dict[str, Any]]:
    """Saved uploads -> (volume, (D, H, W) uint8 slices, intensity record): one volume file (NIfTI,
    MHA, NRRD; an .mhd or .nhdr header with its data file beside it), one 3D npz, or the DICOM files
    of one series."""
    try:
        mapping = intensity.parse_window(window)
    except KdsamError as err:
        raise BadRequest(400, str(err).splitlines()[0]) from err
    if len(paths) == 1 and paths[0].name.lower().endswith(".npz"):
        volume, stack = _npz_volume(paths[0])
        check_size(folder.name, stack.shape, max_pixels)
        return volume, stack, {"method": "none", "source": "npz slices are 0..255 already"}
    headers = [p for p in paths if medical.is_volume_file(p)]
    if len(headers) == 1 and set(paths) <= {headers[0], *itk_io.data_files(headers[0])}:
        volume = medical.read_volume(headers[0])
    elif all(medical.is_dicom(p) for p in paths):
        volume = medical.read_dicom_series(list(paths), folder)
    else:
        odd = next(p.name for p in paths if not medical.is_dicom(p))
        raise BadRequest(
            400,
            f"{odd}: open one NIfTI, MHA or NRRD volume (an .mhd or .nhdr with its data file), one 3D npz, "
            "or the DICOM files of one series",
        )
    width, height, depth = volume.array.shape[:3]  # (x, y, z): the slices come out as (D, H, W)
    check_size(folder.name, (depth, height, width), max_pixels)
    bad = ~np.isfinite(volume.array)
    if bad.any():  # NaN voxels take the lowest value (air, background): one NaN must not blank a window
        volume.array = np.where(bad, np.min(volume.array[~bad], initial=0.0), volume.array)
    stack, record = intensity.to_uint8(volume.slices(), mapping, volume.modality, volume.window)
    return volume, stack, record


def open_volume(
    engine: Engine, files: Sequence[tuple[str, bytes]], window: str, name: str | None, max_pixels: int = MAX_PIXELS
) -> VolumeSession:
    """Uploaded (filename, bytes) pairs -> a session, its slices being embedded in the background;
    slices over `max_pixels` are refused (413)."""
    if not files:
        raise BadRequest(400, "no files: send the volume as multipart field 'files' (several for a DICOM series)")
    with tempfile.TemporaryDirectory(prefix="kdsam-volume-") as tmp:
        folder = Path(tmp) / display_name([f for f, _ in files], name)
        folder.mkdir()
        paths: list[Path] = []
        for i, (filename, data) in enumerate(files):
            base = Path(filename or "upload").name or "upload"
            if not data:
                raise BadRequest(400, f"{base}: empty file")
            path = folder / base  # the upload's own name, so the readers' messages name it
            if path.exists():  # two files of one name (from two folders): keep both
                path = folder / f"{i:05d}-{base}"
            path.write_bytes(data)
            paths.append(path)
        try:
            volume, stack, record = read_upload(folder, paths, window, max_pixels)
        except KdsamError as err:  # the reader's one line, naming our temporary file after the upload
            raise BadRequest(400, str(err).replace(str(folder.parent) + "/", "").splitlines()[0]) from err
    session = VolumeSession(
        display_name([f for f, _ in files], name),
        volume,
        record,
        SliceEmbeddings(predictor_slices(engine), stack),
    )
    session.worker = threading.Thread(target=session.embed_ahead, name="kdsam-embed-ahead", daemon=True)
    _EMBEDDING.add(session)
    session.worker.start()
    return session


@atexit.register
def _stop_embedding() -> None:
    """Let background embeddings finish their slice before the interpreter goes (torch aborts when a
    daemon thread is still inside it at exit)."""
    sessions = list(_EMBEDDING)
    for session in sessions:
        session.stopped.set()
    for session in sessions:
        if session.worker is not None:
            session.worker.join(timeout=10)


def segment_object(
    session: VolumeSession, box3d: Sequence[float] | None, points: np.ndarray, labels: np.ndarray
) -> dict[int, np.ndarray]:
    """One object's prompts -> {z: HxW bool}: its 3D box (x0, y0, z0, x1, y1, z1, inclusive voxel
    indices) by the 3D protocol from its middle slice, then its clicks (Nx3 [x, y, z] in the order
    they came; labels 1 object, 0 background) correcting their slices and spreading outwards while
    the neighbours change: `interactive3d.segment_class`, as `kdsam predict` answers a CVPR25 case
    without a previous answer. Answered: the box's slices and every slice with a mask."""
    depth, h, w = session.stack.shape[:3]
    box = None
    if box3d is not None:
        try:
            x0, y0, z0, x1, y1, z1 = check_box3d(box3d, (depth, h, w), "box3d")
        except ValueError as err:
            raise BadRequest(400, str(err)) from err
        box = Box3D(z0, z1, int((z1 - z0) / 2 + z0), (x0, y0, x1, y1))
    elif not len(points):
        raise BadRequest(400, "give box3d, or points [[x, y, z], ...], or both")
    clicks = [
        ((int(z), min(round(float(y)), h - 1), min(round(float(x)), w - 1)), bool(label))
        for (x, y, z), label in zip(points, labels, strict=True)
    ]
    mask = segment_class(session.embeddings, ClassPrompts(box, clicks, len(clicks)), 1)
    shown = set(range(box.z_min, box.z_max + 1)) if box else set()
    shown.update(int(z) for z in np.nonzero(mask.reshape(depth, -1).any(axis=1))[0])
    return {z: mask[z] for z in sorted(shown)}


def nifti_bytes(session: VolumeSession, gzipped_labels: bytes) -> bytes:
    """The page's label map ((D, H, W) uint8, C order, gzip) -> a .nii.gz on the input's grid (its
    affine, and its header for a NIfTI input)."""
    labels = page_labels(session, gzipped_labels).transpose(2, 1, 0)
    with tempfile.TemporaryDirectory(prefix="kdsam-nifti-") as tmp:
        path = Path(tmp) / "labels.nii.gz"
        medical.write_nifti(path, labels, session.reference)
        return path.read_bytes()


def page_labels(session: VolumeSession, gzipped_labels: bytes) -> np.ndarray:
    """The page's label map (gzip of (D, H, W) uint8, C order) as (D, H, W); the size is checked
    while inflating: no zip bombs."""
    depth, h, w = session.stack.shape[:3]
    want = depth * h * w
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = inflater.decompress(gzipped_labels, want + 1)
    except zlib.error as err:
        raise BadRequest(400, f"labels: not gzip data ({err})") from err
    if len(raw) != want:
        raise BadRequest(400, f"labels: {len(raw)} bytes inflated; a {w}x{h}x{depth} label map is {want}")
    return np.frombuffer(raw, np.uint8).reshape(depth, h, w)
