"""Global place descriptors: PlaceNet (NetVLAD / GeM) or the classical patch-normalised thumbnail.

.. code-block:: python

    from deep_vision.estimators import PlaceRecognizer

    rec = PlaceRecognizer.from_model("models/place.onnx", backend="auto")
    d = rec.describe(frame)            # [D] float32, unit L2 norm; similarity = d1 @ d2
    sad = PlaceRecognizer.classical()  # no network: SeqSLAM's patch-normalised thumbnail

    # Two stages (retrieval, then re-ranking the top candidates by the network's local features):
    d, local = rec.describe_local(frame)            # local: LocalMap (None for a model without them)
    order, scores = SpatialReranker().rerank(similarities, local, candidate_locals)

Two descriptors:

- ``network``: PlaceNet run by any inference backend on the frame resized to
  the network's input (size and channels from the model card or the graph).
- ``sad``: the image representation of SeqSLAM's single-image matcher
  (Milford & Wyeth 2012): the grey frame resized to ``sad_size`` (INTER_AREA)
  and patch-normalised (every ``sad_patch``×``sad_patch`` block to zero mean,
  unit standard deviation; flat blocks to zero). SeqSLAM compares such
  thumbnails by the sum of absolute differences; as a database descriptor the
  vector is L2-normalised, so the inner product is their normalised
  correlation. It needs no training, which makes it the baseline and a
  working descriptor for tests before a network is trained.

:class:`SpatialReranker` re-orders a retrieval's top candidates with the
network's local features (exported models carry the backbone's map as a second
output, ``local_features``), in the spirit of Patch-NetVLAD's spatial scoring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError, ImageEncodingError, ModelError
from deep_vision.io.image import as_grey as to_grey
from deep_vision.models.place_input import preprocess

logger = logging.getLogger(__name__)

DESCRIPTORS = ("network", "sad")
#: Name of the exported PlaceNet's second output (see ``deep_vision.models.place_net``).
LOCAL_OUTPUT = "local_features"


def patch_normalize(grey: np.ndarray, patch: int) -> np.ndarray:
    """Float32 image with every ``patch``×``patch`` block at zero mean and unit std (flat blocks: 0).

    The image sides must be multiples of ``patch`` (SeqSLAM's patch normalisation).
    """
    h, w = grey.shape
    if h % patch or w % patch:
        raise ConfigError(f"patch normalisation: image {w}x{h} is not a multiple of the patch size {patch}")
    blocks = grey.astype(np.float32).reshape(h // patch, patch, w // patch, patch)
    mean = blocks.mean(axis=(1, 3), keepdims=True)
    std = blocks.std(axis=(1, 3), keepdims=True)
    out = np.where(std > 1e-3, (blocks - mean) / np.maximum(std, 1e-3), 0.0)
    return out.reshape(h, w).astype(np.float32)


def thumbnail(image: np.ndarray, size: tuple[int, int] = (64, 32), patch: int = 8) -> np.ndarray:
    """SeqSLAM's image representation: grey, resized to ``size`` (W, H), patch-normalised; [H x W] float32."""
    grey = to_grey(image)
    w, h = int(size[0]), int(size[1])
    if grey.shape != (h, w):
        shrink = grey.shape[1] > w or grey.shape[0] > h
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return patch_normalize(grey, patch)


class PlaceRecognizer:
    """Global descriptor of a full-resolution grey or RGB frame (see the module docstring)."""

    def __init__(self, backend: Any = None, *, descriptor: str = "network", image_size: tuple[int, int] = (256, 128),
                 in_channels: int = 1, input_name: str = "image", output_name: str = "descriptor",
                 local_name: str | None = None, sad_size: tuple[int, int] = (64, 32), sad_patch: int = 8) -> None:
        if descriptor not in DESCRIPTORS:
            raise ConfigError(f"descriptor must be one of {', '.join(DESCRIPTORS)}, got {descriptor!r}")
        if descriptor == "network" and backend is None:
            raise ConfigError("descriptor 'network' needs an inference backend (use PlaceRecognizer.from_model)")
        if in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
        if descriptor == "sad" and (sad_size[0] % sad_patch or sad_size[1] % sad_patch):
            raise ConfigError(f"sad_size {tuple(sad_size)} must be a multiple of sad_patch {sad_patch}")
        self.backend = backend
        self.descriptor = descriptor
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.in_channels = int(in_channels)
        self.input_name = input_name
        self.output_name = output_name
        #: The backend's local-feature output (None: the model has none; :meth:`describe_local` gives None).
        self.local_name = local_name if descriptor == "network" else None
        self.sad_size = (int(sad_size[0]), int(sad_size[1]))
        self.sad_patch = int(sad_patch)
        self._dim: int | None = None
        self.last_time_ms = 0.0
        #: What identifies the network's descriptors (the ONNX sha256 of its card, else of the file).
        self.model_id = ""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, path: str | Path, backend: str = "auto", threads: int | None = None,
                   **kwargs: Any) -> PlaceRecognizer:
        """Load a PlaceNet: ONNX file (+ model card), or a PyTorch checkpoint (``final.pt`` of training).

        The input size, channels and tensor names come from the model card, else
        from the graph (ONNX) or the checkpoint's ``conf`` (PyTorch).
        """
        from deep_vision.inference import load_backend

        path = Path(path)
        factory = None
        if path.suffix.lower() in (".pt", ".pth"):
            from deep_vision.inference.torch_backend import conf_checkpoint_factory

            factory, _ = conf_checkpoint_factory(path, "place_net")
        net = load_backend(path, backend, threads=threads, torch_module_factory=factory)
        if not net.inputs or not net.outputs:
            raise ModelError(f"{path}: the model declares no inputs or outputs")
        spec = net.inputs[0]
        shape = list(spec.shape)
        if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] not in (1, 3):
            raise ModelError(f"{path}: input {spec.name!r} has shape {shape}; a PlaceNet takes [B x C x H x W] "
                             "with C 1 or 3")
        defaults: dict[str, Any] = {"image_size": (int(shape[3]), int(shape[2])), "in_channels": int(shape[1]),
                                    "input_name": spec.name, "output_name": net.outputs[0].name,
                                    "local_name": LOCAL_OUTPUT if any(o.name == LOCAL_OUTPUT for o in net.outputs)
                                    else None}
        defaults.update(kwargs)
        logger.info("place recognizer: %s", net.describe())
        rec = cls(net, descriptor="network", **defaults)
        rec.model_id = _model_id(path)
        return rec

    @classmethod
    def classical(cls, descriptor: str = "sad", **kwargs: Any) -> PlaceRecognizer:
        """A recognizer without a network (``descriptor="sad"``)."""
        if descriptor == "network":
            raise ConfigError("PlaceRecognizer.classical: 'network' needs a model (use from_model)")
        return cls(None, descriptor=descriptor, **kwargs)

    @classmethod
    def create(cls, descriptor: str, model_path: str | Path | None = None, backend: str = "auto",
               threads: int | None = None, **kwargs: Any) -> PlaceRecognizer:
        """``from_model`` for ``descriptor="network"``, ``classical`` otherwise."""
        if descriptor == "network":
            if not model_path:
                raise ConfigError("descriptor 'network' needs a model path")
            return cls.from_model(model_path, backend=backend, threads=threads)
        return cls.classical(descriptor, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def wants_rgb(self) -> bool:
        """True when the descriptor uses colour (an RGB network); grey input is then replicated."""
        return self.descriptor == "network" and self.in_channels == 3

    @property
    def dim(self) -> int:
        """Descriptor length."""
        if self._dim is None:
            if self.descriptor == "sad":
                self._dim = self.sad_size[0] * self.sad_size[1]
            else:
                shape = self.backend.outputs[0].shape
                if isinstance(shape[-1], int):
                    self._dim = int(shape[-1])
                else:
                    self._dim = int(self.describe(np.zeros((self.image_size[1], self.image_size[0]), np.uint8)).size)
        return self._dim

    @property
    def label(self) -> str:
        """Short description for logs and reports."""
        if self.descriptor == "sad":
            return f"sad {self.sad_size[0]}x{self.sad_size[1]} patch {self.sad_patch}"
        return f"network {self.image_size[0]}x{self.image_size[1]}x{self.in_channels} on " + \
            getattr(self.backend, "label", str(self.backend))

    # ------------------------------------------------------------------ descriptors
    def describe(self, image: np.ndarray) -> np.ndarray:
        """[D] float32 unit-norm descriptor of a full-resolution [H x W] grey or [H x W x 3] RGB uint8 frame.

        A frame without any texture (all flat) gives the zero vector under ``sad``.
        """
        return self.describe_local(image, local=False)[0]

    def describe_local(self, image: np.ndarray, local: bool = True) -> tuple[np.ndarray, LocalMap | None]:
        """(:meth:`describe`'s descriptor, the network's :class:`LocalMap` of the frame).

        The map is None for ``sad``, for a model without the ``local_features`` output, or with ``local`` False.
        """
        t0 = time.perf_counter()
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ImageEncodingError(f"expected uint8 pixels, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) or min(image.shape[:2]) < 1:
            raise ImageEncodingError(f"expected an [H x W] grey or [H x W x 3] RGB image, "
                                     f"got shape {list(image.shape)}")
        local_map = None
        if self.descriptor == "sad":
            d = thumbnail(image, self.sad_size, self.sad_patch).reshape(-1)
        else:
            x = preprocess(image, self.image_size, self.in_channels)
            outputs = self.backend.run({self.input_name: x})
            d = np.asarray(outputs[self.output_name], dtype=np.float32).reshape(-1)
            if local and self.local_name is not None:
                local_map = LocalMap.from_output(outputs[self.local_name])
        norm = float(np.linalg.norm(d))
        out = (d / norm if norm > 1e-12 else np.zeros_like(d)).astype(np.float32)
        self.last_time_ms = (time.perf_counter() - t0) * 1e3
        return out, local_map

    def describe_many(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """[N x D] descriptors of ``images`` (one at a time: the exported network has batch 1)."""
        rows = [self.describe(im) for im in images]
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows)


@dataclass(frozen=True)
class LocalMap:
    """A frame's network feature map: ``cells`` [H*W x D] float32, row-major, unit-norm rows; ``grid`` (W, H)."""

    cells: np.ndarray
    grid: tuple[int, int]

    @classmethod
    def from_output(cls, value: np.ndarray) -> LocalMap:
        """From the network's [1 x D x H x W] ``local_features`` output."""
        value = np.asarray(value, dtype=np.float32)
        if value.ndim != 4 or value.shape[0] != 1:
            raise ModelError(f"{LOCAL_OUTPUT}: expected [1 x D x H x W], got {list(value.shape)}")
        _, dim, h, w = value.shape
        return cls(np.ascontiguousarray(value[0].reshape(dim, h * w).T), (int(w), int(h)))


class SpatialReranker:
    """Re-orders retrieval candidates by matching the network's local features (two-stage place recognition).

    For a query and a candidate, the cells of the two feature maps are matched
    as mutual nearest neighbours (cosine similarity). Seen again, a place's
    cells reappear where a viewpoint change puts them, while a look-alike
    place's chance matches scatter. The spatial score is the fraction of the
    cells whose matches agree with one geometric model of the grid positions:

    - ``"homography"`` (default): a homography fitted by RANSAC (OpenCV,
      ``ransac_cells`` cells), which allows a change of scale and a shift that
      grows across the frame, as a sideways step past near and far walls
      gives (Patch-NetVLAD's RANSAC scoring, on our cells);
    - ``"shift"``: the largest group of matches sharing one integer grid shift
      (a vote), the score until session 17.

    A candidate's score is its global similarity + ``weight`` × spatial score;
    the ``top_k`` best retrieved candidates are re-ordered by it.

    The defaults (5 candidates, the homography score, weight 0.5) were chosen on
    validation sets, not on the held-out benchmarks: the training configs' and two
    corridors with laps 0.75 m apart (bench/results/2026-11-22-place-corridor-split.md;
    the shift vote, first with 10 candidates: bench/results/2026-11-22-place-rerank.md).
    """

    SCORES = ("homography", "shift")

    def __init__(self, top_k: int = 5, weight: float = 0.5, score: str = "homography",
                 ransac_cells: float = 1.5) -> None:
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if weight < 0:
            raise ConfigError(f"weight must be 0 or more, got {weight}")
        if score not in self.SCORES:
            raise ConfigError(f"score must be one of {', '.join(self.SCORES)}, got {score!r}")
        if ransac_cells <= 0:
            raise ConfigError(f"ransac_cells must be positive, got {ransac_cells}")
        self.top_k = int(top_k)
        self.weight = float(weight)
        self.score = score
        self.ransac_cells = float(ransac_cells)

    @staticmethod
    def mutual_matches(query: LocalMap, candidate: LocalMap) -> tuple[np.ndarray, np.ndarray]:
        """Grid positions (x, y) [M x 2] float32 of the query's and the candidate's mutually nearest cells."""
        if query.grid != candidate.grid or query.cells.shape[1] != candidate.cells.shape[1]:
            raise ValueError(f"local maps differ: {query.grid} x {query.cells.shape[1]} against "
                             f"{candidate.grid} x {candidate.cells.shape[1]} (another network?)")
        if not len(query.cells):
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        sims = query.cells @ candidate.cells.T
        nearest = sims.argmax(axis=1)
        a = np.flatnonzero(sims.argmax(axis=0)[nearest] == np.arange(len(nearest)))
        b = nearest[a]
        w = query.grid[0]
        return (np.stack([a % w, a // w], axis=1).astype(np.float32),
                np.stack([b % w, b // w], axis=1).astype(np.float32))

    def spatial_score(self, query: LocalMap, candidate: LocalMap) -> float:
        """Fraction of the query's cells whose mutual nearest neighbours agree with one model (``score``)."""
        pa, pb = self.mutual_matches(query, candidate)
        n = len(query.cells)
        if self.score == "shift":
            if not len(pa):
                return 0.0
            w, h = query.grid
            d = (pb - pa).astype(np.int64)
            votes = np.bincount((d[:, 0] + w - 1) * (2 * h - 1) + (d[:, 1] + h - 1))
            return float(votes.max()) / n
        if len(pa) < 4:
            return 0.0
        _, inliers = cv2.findHomography(pa, pb, cv2.RANSAC, self.ransac_cells, maxIters=500, confidence=0.99)
        return 0.0 if inliers is None else float(inliers.sum()) / n

    def rerank(self, similarities: Sequence[float] | np.ndarray, query: LocalMap,
               candidates: Sequence[LocalMap]) -> tuple[np.ndarray, np.ndarray]:
        """(order, scores): the first ``top_k`` candidates (given best first, with their global
        ``similarities``) re-ordered by score, then the rest in their order; scores of the re-ordered ones."""
        sims = np.asarray(similarities, dtype=np.float64).reshape(-1)
        if len(sims) != len(candidates):
            raise ValueError(f"{len(sims)} similarities for {len(candidates)} candidates")
        k = min(self.top_k, len(candidates))
        scores = np.array([sims[i] + self.weight * self.spatial_score(query, candidates[i]) for i in range(k)])
        head = np.argsort(-scores, kind="stable")
        return np.concatenate([head, np.arange(k, len(candidates))]).astype(np.int64), scores[head]


def _model_id(path: Path) -> str:
    from deep_vision.inference.modelcard import ModelCard, card_path_for, file_sha256

    card = card_path_for(path)
    if card.is_file():
        return ModelCard.load(card).sha256
    return file_sha256(path)
