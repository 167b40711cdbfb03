"""The model behind the server: one predictor, used by one request at a time, and the embeddings it made.

A predictor holds the embedding of the image last set, so two requests interleaving set_image and
predict would mix images up. `Engine` serialises every model call behind one lock (requests queue;
the encoder saturates the CPU anyway) and lends the predictor a stored `Embedding` for each
decode, so a session's image is embedded once and prompted many times. Works with any
`kdsam.predictor.Predictor`: `KDSamPredictor` and an export's `OnnxPredictor` both take boxes, clicks
and the previous mask (an export older than its prompt decoder answers a click with a one-line 400
telling to rerun `kdsam export`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kdsam.errors import KdsamError
from kdsam.infer.prompts import decode_object
from kdsam.serve.store import DEFAULT_TTL_S, ExpiringStore

if TYPE_CHECKING:  # kdsam.predictor loads torch; the server's request parsing and --help do not need it
    from kdsam.predictor import Predictor

DECODE_BYTES = 64 * 2**20  # a chunk's masks at full size in float32, before they become bool
MAX_CHUNK = 16


@dataclass
class Embedding:
    """What `set_image` leaves on a predictor: enough to decode prompts without the encoder."""

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class Prediction:
    """Per-object masks (N x H x W bool), their scores, and the low-res logits of each (N x 256 x 256)."""

    masks: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray


@dataclass
class Session:
    """One uploaded image: its pixels (for the page to show), its embedding, the last mask's logits."""

    image: np.ndarray
    embedding: Embedding
    previous: np.ndarray | None = None
    created: float = field(default_factory=time.time)


class Engine:
    """A predictor behind a lock, with a bounded LRU of sessions (least recently used evicted first,
    and any unused for `session_ttl_s` seconds: the sessions of closed tabs)."""

    def __init__(
        self,
        predictor: Predictor,
        max_sessions: int = 16,
        session_ttl_s: float = DEFAULT_TTL_S,
        prompts: tuple[str, ...] | None = None,
    ) -> None:
        if max_sessions < 1:
            raise KdsamError(f"--max-sessions {max_sessions}: keep at least one session")
        self.predictor = predictor
        # what the model was trained on (kdsam.serve.model_info); unknown: all a Predictor takes
        self.prompts = prompts or ("box", "point")
        self.max_sessions, self.session_ttl_s = max_sessions, session_ttl_s
        self._model_lock = threading.Lock()
        self._sessions: ExpiringStore[Session] = ExpiringStore(max_sessions, session_ttl_s)

    @property
    def model_lock(self) -> threading.Lock:
        """Held by every model call; other users of the model (volume slices) take it too."""
        return self._model_lock

    @property
    def name(self) -> str:
        return str(getattr(self.predictor, "name", None) or getattr(self.predictor.model, "name", "model"))

    def embed(self, image: np.ndarray) -> Embedding:
        with self._model_lock:
            self.predictor.set_image(image)
            p = self.predictor
            return Embedding(p.features, tuple(p.original_size), tuple(p.input_size))

    def _use(self, embedding: Embedding) -> None:
        p = self.predictor
        p.features, p.original_size, p.input_size = embedding.features, embedding.original_size, embedding.input_size
        p.is_image_set = True

    def decode_boxes(self, embedding: Embedding, boxes: np.ndarray) -> Iterator[Prediction]:
        """One single-mask prediction per box, as `predictor.predict_boxes`, in chunks of boxes whose
        full-size float masks fit in DECODE_BYTES: memory stays flat however many boxes come, and
        the model lock is taken per chunk, so other requests interleave."""
        h, w = embedding.original_size
        chunk = max(1, min(MAX_CHUNK, DECODE_BYTES // (4 * h * w)))
        for start in range(0, len(boxes), chunk):
            with self._model_lock:
                self._use(embedding)
                masks, scores, low_res = self.predictor.predict_boxes(boxes[start : start + chunk])
            yield Prediction(masks[:, 0], scores[:, 0], low_res[:, 0])

    def predict_points(
        self,
        embedding: Embedding,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        previous: np.ndarray | None,
    ) -> Prediction:
        """One mask from clicks (label 1 object, 0 background), optionally inside a box and refining
        the previous mask's logits, decoded as every entry point decodes one object
        (`kdsam.infer.prompts.decode_object`: a lone click takes SAM's best of three)."""
        with self._model_lock:
            self._use(embedding)
            mask, score, low_res = decode_object(self.predictor, points, labels, box, previous)
        return Prediction(mask[None], np.array([score], np.float32), low_res[None])

    def open_session(self, image: np.ndarray) -> str:
        return self._sessions.add(Session(image, self.embed(image)))

    def session(self, key: str) -> Session:
        return self._sessions.get(key)

    def close_session(self, key: str) -> bool:
        return self._sessions.pop(key)

    @property
    def n_sessions(self) -> int:
        return len(self._sessions)
