"""``deep-vision evaluate place``: place recognition and loop closure against classical baselines.

(a) **VPR benchmarks** (real images, held out from training): Recall@1/5/10
    of winter queries against summer references on Nordland places < 900
    (places ≥ 900 may be trained on) and of Corridor's queries against its
    references on places < 56 (places ≥ 61 may be trained on), for
    the network and, in the same run, two classical baselines: SeqSLAM's
    single-image matcher (patch-normalised thumbnail, 64 px wide, sum of
    absolute differences) and VLAD on ORB (binary descriptors as bit vectors,
    a 32-word vocabulary by k-means on the reference images, which needs no
    labels; signed-square-root and intra-normalisation). Then both kinds in
    two stages: the network's top 5 re-ordered by its own local features
    (:class:`~deep_vision.estimators.SpatialReranker`, its defaults), and SAD's top 10
    re-ordered by ORB + RANSAC inliers (the loop-closure verifier), so that
    each side gets a re-ranking. Time per query: describing the query plus
    ranking all references (and re-ranking).
(b) **Loop closure on synthetic routes** (world seeds from
    :data:`SYNTHETIC_EVAL_SEEDS`, never trained on): the detector runs over
    the drive (a keyframe every ``keyframe_interval_s``, the most recent
    ``exclude_recent_s`` excluded). A query is a *loop* when a searchable
    keyframe lies within the world's revisit distance and heading (4 m, 30°);
    a returned match is *correct* within ``correct_radius_m`` and the same
    heading limit. Without verification the top-1 candidate's similarity is
    the score; with verification the best verified candidate's. Precision =
    correct / returned, recall = correct matches of loop queries / loops; the PR curve sweeps the
    score threshold, and recall at 100 % precision is the highest recall of a
    threshold with no wrong match. Also: error of the verified relative
    rotation and translation direction, and geolocation (keyframes geotagged
    from the world positions around :data:`GEO_ORIGIN`) by haversine error.
(d) **EuRoC loop pairs** (``euroc_loop_pairs``, V1_01's left camera): the
    verifier on the true revisit (img_1 of img_0, 98 s later; 37.5° and
    0.45 m by the dataset's ground truth, of which only these two figures are
    here), the looser pair (img_3 of img_2, no ground truth) and a wrong place
    (img_2 of img_0): verified or not, inliers, the rotation angle and its
    error against the ground truth's (a lower bound of the rotation error:
    only the angle is known), and whether the translation is metric. It is
    not: the ground-plane scale needs a camera above a flat ground at a known
    height, and stereo is not a scale source yet.
(c) **Database scaling**: query time (one query, top 10) against 1k … 1M
    clustered random unit descriptors for the exact (``IndexFlatIP``) and the
    approximate (HNSW) index, with build time and the approximate index's
    agreement with the exact top-1.

Writes ``<out>/place-<date>.md`` (+ ``.json``), ``place-<date>-pr.png`` (PR
curves of (b)) and ``place-<date>-scaling.png`` (query time of (c)).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deep_vision.errors import ConfigError, DatasetError
from deep_vision.estimators.geolocation import LocalTangentPlane, haversine_m
from deep_vision.estimators.place import PlaceRecognizer, SpatialReranker, thumbnail
from deep_vision.eval.progress import Progress
from deep_vision.io.vpr import (
    CORRIDOR_EVAL_PLACES,
    CORRIDOR_TRAIN_PLACES,
    NORDLAND_EVAL_PLACES,
    VprBenchmark,
    load_corridor,
    load_nordland,
    read_image,
)

logger = logging.getLogger(__name__)

#: Synthetic world seeds of the loop-closure evaluation; training must not use seeds from 9001 on.
SYNTHETIC_EVAL_SEEDS = (9001, 9002, 9003)
SYNTHETIC_EVAL_FIRST_SEED = 9001
#: Where the synthetic world's origin is put on Earth for the geolocation test (Oxford).
GEO_ORIGIN = (51.7520, -1.2577, 60.0)
RECALL_AT = (1, 5, 10)



# ============================================================================ metrics
def recall_at_n(ranked: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = RECALL_AT) -> dict[int, float]:
    """Fraction of queries with a correct reference among their first N (ranked: [Q x ≥max N] indices)."""
    ranked = np.asarray(ranked)
    if len(ranked) != len(positives):
        raise ValueError(f"ranked has {len(ranked)} rows for {len(positives)} queries")
    out = {}
    for n in ns:
        hits = [np.isin(ranked[q, :n], positives[q]).any() for q in range(len(ranked))]
        out[int(n)] = float(np.mean(hits)) if hits else math.nan
    return out


def precision_recall(scores: np.ndarray, correct: np.ndarray, n_loops: int,
                     found: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PR curve of detections (score, correct) against ``n_loops`` true loops: (precision, recall, thresholds).

    ``found`` marks the detections that count towards recall (correct ones of queries that are
    loops; default: ``correct``). Thresholds are the detections' scores, highest first; entry i
    accepts detections 0..i.
    """
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    found = correct if found is None else np.asarray(found, bool) & correct
    if len(scores) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    k = np.arange(1, len(order) + 1)
    precision = np.cumsum(correct[order]) / k
    recall = np.cumsum(found[order]) / max(n_loops, 1)
    return precision, recall, scores[order]


def recall_at_full_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Highest recall reached with precision exactly 1 (0 when the first detection is already wrong)."""
    ok = np.asarray(precision) >= 1.0 - 1e-12
    return float(np.max(np.asarray(recall)[ok])) if ok.any() else 0.0


# ============================================================================ (a) VPR benchmarks
def sad_size_for(shape: tuple[int, ...], width: int = 64, patch: int = 8) -> tuple[int, int]:
    """Thumbnail (W, H): ``width`` wide, the image's aspect ratio, H a multiple of ``patch``."""
    h, w = shape[:2]
    return width, max(patch, int(round(width * h / w / patch)) * patch)


def enlarge(image: np.ndarray, min_side: int) -> np.ndarray:
    """``image`` scaled up (bicubic) so that its shorter side is at least ``min_side`` pixels; larger ones as is."""
    scale = max(1.0, min_side / min(image.shape[:2]))
    if scale == 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


class GlobalMatcher:
    """Single-stage retrieval: ``fit`` on the references, ``describe`` each image, ``rank`` by the descriptors.

    Every matcher offers ``index(references)`` and ``search(image, n)`` (the ``n`` best reference
    indices); ``last_describe_ms`` is the time the last search spent describing the query.
    """

    name = ""
    learned = False  #: a network of ours (else a classical baseline)
    two_stage = False  #: retrieval + re-ranking of the top candidates

    def fit(self, references: list[np.ndarray]) -> None:
        pass

    def describe(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rank(self, query: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def index(self, references: list[np.ndarray]) -> None:
        self.fit(references)
        self._refs = np.stack([self.describe(im) for im in references]).astype(np.float32)

    def search(self, image: np.ndarray, n: int) -> np.ndarray:
        t0 = time.perf_counter()
        q = self.describe(image)
        self.last_describe_ms = (time.perf_counter() - t0) * 1e3
        return self.rank(q, self._refs, n)


class SadMatcher(GlobalMatcher):
    """SeqSLAM's single-image matcher: patch-normalised thumbnails compared by mean absolute difference."""

    name = "SAD (patch-normalised thumbnail)"

    def __init__(self, size: tuple[int, int], patch: int = 8) -> None:
        self.size, self.patch = size, patch

    def describe(self, image: np.ndarray) -> np.ndarray:
        return thumbnail(image, self.size, self.patch).reshape(-1)

    def rank(self, query: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
        d = np.abs(refs - query[None]).mean(axis=1)
        return np.argsort(d, kind="stable")[:n]


class OrbVladMatcher(GlobalMatcher):
    """VLAD on ORB: bit-vector residuals to a k-means vocabulary; cosine similarity."""

    name = "VLAD on ORB (32 words)"

    def __init__(self, words: int = 32, features: int = 500, min_side: int = 240, seed: int = 0) -> None:
        self.words = words
        self.min_side = min_side
        self.seed = seed
        self._orb = cv2.ORB_create(nfeatures=features, edgeThreshold=15, patchSize=15, fastThreshold=10)
        self.centroids: np.ndarray | None = None

    def _bits(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        grey = enlarge(grey, self.min_side)  # ORB needs room around its keypoints
        _, desc = self._orb.detectAndCompute(grey, None)
        if desc is None:
            return np.zeros((0, 256), np.float32)
        return np.unpackbits(desc, axis=1).astype(np.float32)

    def fit(self, references: list[np.ndarray]) -> None:
        import faiss

        bits = [self._bits(im) for im in references]
        data = np.concatenate([b for b in bits if len(b)] or [np.zeros((0, 256), np.float32)])
        if len(data) < self.words:
            raise DatasetError(f"ORB-VLAD: only {len(data)} ORB features in the references; need {self.words}")
        rng = np.random.default_rng(self.seed)
        if len(data) > 50_000:
            data = data[rng.choice(len(data), 50_000, replace=False)]
        km = faiss.Kmeans(256, self.words, niter=20, seed=self.seed, verbose=False)
        km.train(np.ascontiguousarray(data))
        self.centroids = km.centroids.copy()

    def describe(self, image: np.ndarray) -> np.ndarray:
        if self.centroids is None:
            raise ConfigError("OrbVladMatcher.describe before fit()")
        bits = self._bits(image)
        vlad = np.zeros((self.words, 256), np.float32)
        if len(bits):
            # Nearest word by ‖b − c‖² = ‖c‖² − 2 b·c (+ ‖b‖², the same for every word).
            nearest = np.argmin((self.centroids**2).sum(axis=1)[None] - 2.0 * bits @ self.centroids.T, axis=1)
            np.add.at(vlad, nearest, bits - self.centroids[nearest])
        vlad = np.sign(vlad) * np.sqrt(np.abs(vlad))
        vlad /= np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)
        v = vlad.reshape(-1)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def rank(self, query: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
        return np.argsort(-(refs @ query), kind="stable")[:n]


class NetworkMatcher(GlobalMatcher):
    """The learned descriptor (any :class:`PlaceRecognizer`), cosine similarity."""

    learned = True

    def __init__(self, recognizer: PlaceRecognizer, name: str = "PlaceNet (ours)") -> None:
        self.recognizer = recognizer
        self.name = name

    def describe(self, image: np.ndarray) -> np.ndarray:
        return self.recognizer.describe(image)

    def rank(self, query: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
        return np.argsort(-(refs @ query), kind="stable")[:n]


class RerankedNetworkMatcher(GlobalMatcher):
    """Two stages: the network's descriptor retrieves, :class:`SpatialReranker` re-orders its top candidates."""

    learned = True
    two_stage = True

    def __init__(self, recognizer: PlaceRecognizer, reranker: SpatialReranker | None = None) -> None:
        if recognizer.local_name is None:
            raise ConfigError("spatial re-ranking needs a model with the local_features output "
                              "(re-export it with training/export_place.py)")
        self.recognizer = recognizer
        self.reranker = reranker or SpatialReranker()
        self.name = f"PlaceNet + spatial re-ranking of the top {self.reranker.top_k} (ours)"

    def index(self, references: list[np.ndarray]) -> None:
        described = [self.recognizer.describe_local(im) for im in references]
        self._refs = np.stack([d for d, _ in described])
        self._maps = [m for _, m in described]

    def search(self, image: np.ndarray, n: int) -> np.ndarray:
        t0 = time.perf_counter()
        q, local = self.recognizer.describe_local(image)
        self.last_describe_ms = (time.perf_counter() - t0) * 1e3
        sims = self._refs @ q
        top = np.argsort(-sims, kind="stable")[:max(n, self.reranker.top_k)]
        order, _ = self.reranker.rerank(sims[top], local, [self._maps[i] for i in top])
        return top[order][:n]


class VerifiedMatcher(GlobalMatcher):
    """Two stages, classical: a matcher's top candidates re-ordered by local features + RANSAC (the
    loop-closure :class:`GeometricVerifier`, ORB by default; as hloc re-ranks by inliers): the verified ones
    first, by inlier count, then the rest in retrieval order. Frames are enlarged to ``min_side`` pixels
    first (ORB needs room around its keypoints)."""

    two_stage = True

    def __init__(self, base: GlobalMatcher, verifier: Any = None, top_k: int = 10, min_side: int = 240) -> None:
        from deep_vision.estimators.loop_closure import GeometricVerifier

        self.base = base
        self.verifier = verifier or GeometricVerifier()
        self.top_k = int(top_k)
        self.min_side = int(min_side)
        self.name = f"{base.name} + {self.verifier.features.upper()}/RANSAC re-ranking of the top {self.top_k}"

    def _features(self, image: np.ndarray):
        return self.verifier.extract(enlarge(image, self.min_side))

    def index(self, references: list[np.ndarray]) -> None:
        self.base.index(references)
        self._features_ref = [self._features(im) for im in references]

    def search(self, image: np.ndarray, n: int) -> np.ndarray:
        top = self.base.search(image, max(n, self.top_k))
        self.last_describe_ms = self.base.last_describe_ms
        query = self._features(image)
        checks = [self.verifier.verify(query, self._features_ref[i]) for i in top[:self.top_k]]
        head = sorted(range(len(checks)), key=lambda k: (not checks[k].verified,
                                                         -checks[k].inliers if checks[k].verified else 0, k))
        return np.concatenate([top[head], top[len(checks):]])[:n]


@dataclass
class VprScores:
    recall: dict[int, float]
    query_ms_p50: float
    describe_ms_p50: float
    queries: int
    references: int
    learned: bool = False
    two_stage: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"recall": {str(k): v for k, v in self.recall.items()}, "query_ms_p50": self.query_ms_p50,
                "describe_ms_p50": self.describe_ms_p50, "queries": self.queries, "references": self.references,
                "learned": self.learned, "two_stage": self.two_stage}


def run_vpr(bench: VprBenchmark, matchers: Sequence[Any], rgb: bool = False,
            progress: Callable[[int], None] | None = None) -> dict[str, VprScores]:
    """Recall@N and time per query of each matcher on one benchmark."""
    refs_img = [read_image(p, rgb=rgb) for p in bench.references]
    queries_img = [read_image(p, rgb=rgb) for p in bench.queries]
    n_max = max(RECALL_AT)
    out: dict[str, VprScores] = {}
    for step, m in enumerate(matchers):
        m.index(refs_img)
        ranked, q_ms, d_ms = [], [], []
        for im in queries_img:
            t0 = time.perf_counter()
            ranked.append(m.search(im, n_max))
            q_ms.append((time.perf_counter() - t0) * 1e3)
            d_ms.append(m.last_describe_ms)
        out[m.name] = VprScores(recall_at_n(np.stack(ranked), bench.positives), float(np.median(q_ms)),
                                float(np.median(d_ms)), len(queries_img), len(refs_img), m.learned, m.two_stage)
        if progress:
            progress(step + 1)
    return out


def classical_matchers(bench: VprBenchmark) -> list[GlobalMatcher]:
    """The classical baselines of (a), sized for ``bench``'s frames: the SAD thumbnail, VLAD on ORB, and SAD's
    top 10 re-ordered by ORB + RANSAC."""
    sad = SadMatcher(sad_size_for(read_image(bench.queries[0]).shape))
    return [sad, OrbVladMatcher(), VerifiedMatcher(SadMatcher(sad.size))]


def vpr_benchmarks(data_root: Path) -> list[tuple[VprBenchmark, bool]]:
    """The held-out benchmarks present under ``data_root``: (benchmark, read as RGB)."""
    out = []
    if (data_root / "vpr_corridor").is_dir():
        out.append((load_corridor(data_root / "vpr_corridor", CORRIDOR_EVAL_PLACES), True))
    if (data_root / "vpr_nordland").is_dir():
        out.append((load_nordland(data_root / "vpr_nordland", NORDLAND_EVAL_PLACES), False))
    return out


# ============================================================================ (b) loop closure
def route_config(seed: int, frames: int = 600, width: int = 620, height: int = 188, encoding: str = "mono8"):
    """The default closed route (2.4 laps at 600 frames) of world ``seed`` at a reduced image size."""
    from deep_vision.synthetic.config import SyntheticWorldConfig

    config = SyntheticWorldConfig(seed=seed, frames=frames)
    config.camera.width, config.camera.height, config.camera.encoding = width, height, encoding
    return config


@dataclass
class LoopScores:
    """Loop-closure results of one descriptor over the routes."""

    loops: int = 0  # queries with a true loop among the searchable keyframes
    queries: int = 0
    raw: list[tuple] = field(default_factory=list)  # (top-1 similarity, correct[, query is a loop])
    verified: list[tuple] = field(default_factory=list)  # (best verified similarity, correct[, query is a loop])
    rotation_err_deg: list[float] = field(default_factory=list)
    direction_err_deg: list[float] = field(default_factory=list)
    geo_err_m: list[float] = field(default_factory=list)
    describe_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loops": self.loops, "queries": self.queries}
        for name, dets in (("without_verification", self.raw), ("with_verification", self.verified)):
            s, c, f = self._columns(dets)
            p, r, _ = precision_recall(s, c, self.loops, f)
            out[name] = {
                "detections": len(dets),
                "precision_all": float(c.mean()) if len(c) else math.nan,
                "recall_all": float((c & f).sum() / max(self.loops, 1)),
                "recall_at_100_precision": recall_at_full_precision(p, r),
                "average_precision": float(np.sum(np.diff(np.concatenate([[0.0], r])) * p)) if len(p) else 0.0,
            }
        for key, values in (("rotation_err_deg", self.rotation_err_deg), ("direction_err_deg", self.direction_err_deg),
                            ("geolocation_err_m", self.geo_err_m), ("describe_ms", self.describe_ms),
                            ("keyframe_ms", self.frame_ms)):
            v = np.asarray(values, float)
            out[key] = {"p50": float(np.median(v)) if v.size else math.nan,
                        "p90": float(np.percentile(v, 90)) if v.size else math.nan, "n": int(v.size)}
        return out

    @staticmethod
    def _columns(dets: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.array([d[0] for d in dets], float)
        c = np.array([d[1] for d in dets], bool)
        f = np.array([d[2] if len(d) > 2 else d[1] for d in dets], bool)
        return s, c, f

    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for name, dets in (("without verification", self.raw), ("with verification", self.verified)):
            sc, c, f = self._columns(dets)
            p, r, _ = precision_recall(sc, c, self.loops, f)
            out[name] = (p, r)
        return out


def _heading(T: np.ndarray) -> np.ndarray:
    axis = T[..., :3, 2]
    return np.arctan2(axis[..., 1], axis[..., 0])


def run_route(sequence, recognizer: PlaceRecognizer, scores: LoopScores, *, keyframe_interval_s: float = 0.2,
              exclude_recent_s: float = 20.0, top_k: int = 5, correct_radius_m: float = 10.0,
              images: list[np.ndarray] | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Run the detector over one synthetic drive and add its detections to ``scores``."""
    from scipy.spatial.transform import Rotation

    from deep_vision.estimators.loop_closure import (
        GeometricVerifier,
        KeyframeSelector,
        LoopClosureDetector,
    )

    conf = sequence.config.revisits
    plane = LocalTangentPlane(*GEO_ORIGIN)
    det = LoopClosureDetector(recognizer, top_k=top_k, exclude_recent_s=exclude_recent_s,
                              verifier=GeometricVerifier(), keyframes=KeyframeSelector(interval_s=keyframe_interval_s),
                              approximate_above=1_000_000)
    K = sequence.camera.K
    T = sequence.T_world_cam
    centres = T[:, :3, 3]
    heading = _heading(T)
    frame_of: list[int] = []

    def close(a: int, b: np.ndarray, radius: float) -> np.ndarray:
        d = np.linalg.norm(centres[b, :2] - centres[a, :2], axis=1)
        dh = np.degrees(np.abs(np.angle(np.exp(1j * (heading[b] - heading[a])))))
        return (d <= radius) & (dh <= conf.max_heading_deg)

    for i in range(len(sequence)):
        image = images[i] if images is not None else sequence.image(i)
        stamp = int(sequence.stamps_ns[i])
        lat, lon, alt = plane.to_geodetic(centres[i])
        limit = det.searchable_limit(stamp) if frame_of else 0
        result = det.process(image, stamp, K=K, gps=(float(lat), float(lon), float(alt)))
        if progress:
            progress(i + 1)
        if result is None:
            continue
        frame_of.append(i)
        scores.queries += 1
        scores.describe_ms.append(result.timings_ms["describe_ms"])
        scores.frame_ms.append(result.timings_ms["total_ms"])
        searchable = np.asarray(frame_of[:limit], int)
        is_loop = bool(searchable.size and close(i, searchable, conf.max_distance_m).any())
        scores.loops += is_loop
        if not result.candidates:
            continue
        top = result.candidates[0]
        scores.raw.append((top.similarity, bool(close(i, np.array([frame_of[top.match_id]]), correct_radius_m)[0]),
                           is_loop))
        verified = result.verified
        if not verified:
            continue
        best = verified[0]
        m = frame_of[best.match_id]
        correct = bool(close(i, np.array([m]), correct_radius_m)[0])
        scores.verified.append((best.similarity, correct, is_loop))
        if correct and best.has_relative_pose:
            T_mq = np.linalg.inv(T[m]) @ T[i]
            v = best.verification
            scores.rotation_err_deg.append(float(np.degrees(np.linalg.norm(
                Rotation.from_matrix(v.rotation.T @ T_mq[:3, :3]).as_rotvec()))))
            baseline = np.linalg.norm(T_mq[:3, 3])
            if baseline > 0.5:  # the direction of a shorter baseline is not observable at this resolution
                scores.direction_err_deg.append(float(np.degrees(np.arccos(np.clip(
                    float(v.translation @ (T_mq[:3, 3] / baseline)), -1.0, 1.0)))))
        if result.geolocation is not None:
            scores.geo_err_m.append(float(haversine_m(result.geolocation.latitude, result.geolocation.longitude,
                                                      lat, lon)))


# ============================================================================ (c) database scaling
def clustered_descriptors(n: int, dim: int, rng: np.random.Generator, places_per_cluster: int = 50) -> np.ndarray:
    """``n`` unit vectors in clusters (like keyframes of similar-looking places)."""
    centres = rng.standard_normal((max(1, n // places_per_cluster), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run_scaling(sizes: Sequence[int], dim: int = 256, queries: int = 200, seed: int = 0,
                progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Query time (p50, p95 ms; one query, top 10) of the exact and the HNSW database at each size."""
    import faiss

    from deep_vision.estimators.loop_closure import KeyframeDatabase

    rng = np.random.default_rng(seed)
    rows = []
    for step, n in enumerate(sorted(sizes)):
        x = clustered_descriptors(int(n), dim, rng)
        qi = rng.integers(0, n, queries)
        q = x[qi] + 0.02 * rng.standard_normal((queries, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        stamps = np.arange(n, dtype=np.int64)
        row: dict[str, Any] = {"size": int(n)}
        exact_top = None
        for kind in ("exact", "hnsw"):
            faiss.omp_set_num_threads(2)  # building may use both cores; queries run on one
            t0 = time.perf_counter()
            db = KeyframeDatabase(dim, approximate_above=int(n) + 1 if kind == "exact" else max(1, int(n) - 1),
                                  threads=None)
            db.add_batch(x, stamps)
            build_s = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)
            for i in range(min(10, queries)):  # warm-up
                db.search(q[i], 10)
            times, top = [], []
            for i in range(queries):
                t1 = time.perf_counter()
                _, ids = db.search(q[i], 10)
                times.append((time.perf_counter() - t1) * 1e3)
                top.append(ids[0])
            top_arr = np.asarray(top)
            if kind == "exact":
                exact_top = top_arr
            row[kind] = {"build_s": build_s, "query_ms_p50": float(np.median(times)),
                         "query_ms_p95": float(np.percentile(times, 95)), "index": db.index_kind,
                         "top1_agrees_with_exact": float(np.mean(top_arr == exact_top))}
            del db
        rows.append(row)
        if progress:
            progress(step + 1)
    return rows


# ============================================================================ report
def pr_png(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"with verification": "-", "without verification": "--"}
    for k, (desc, by_mode) in enumerate(curves.items()):
        colour = f"C{k}"
        for mode, (p, r) in by_mode.items():
            if len(p):
                ax.plot(np.concatenate([[0.0], r]), np.concatenate([[1.0], p]), styles.get(mode, "-"), color=colour,
                        lw=1.8, label=f"{desc}, {mode}")
    ax.set_xlabel("recall (loops found / true loops)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scaling_png(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [r["size"] for r in rows]
    for kind, label in (("exact", "exact (IndexFlatIP)"), ("hnsw", "approximate (HNSW)")):
        ax.plot(sizes, [r[kind]["query_ms_p50"] for r in rows], "o-", label=label)
    ax.axhline(5.0, color="0.5", ls=":", label="5 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("keyframes in the database")
    ax.set_ylabel("query time, p50 (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def target_lines(scores: dict[str, VprScores]) -> list[str]:
    """The issue's comparison, stage for stage: single-stage network vs single-stage classical, and the
    two-stage network vs the best classical of either kind."""
    single = [s.recall[1] for s in scores.values() if not s.learned and not s.two_stage]
    classical = [s.recall[1] for s in scores.values() if not s.learned]
    lines = []
    for two_stage, against, what in ((False, single, "the global descriptor against the single-stage baselines"),
                                     (True, classical, "two stages (re-ranked) against every baseline, re-ranked "
                                                       "SAD included")):
        net = [s.recall[1] for s in scores.values() if s.learned and s.two_stage == two_stage]
        if net and against:
            lines.append(f"Network R@1 − best classical R@1: {100 * (net[0] - max(against)):+.1f} points "
                         f"({what}; target: +20).")
    return ["", *lines] if lines else []


def write_report(out: Path, stem: str, header: dict[str, Any], vpr: dict[str, dict[str, VprScores]],
                 loops: dict[str, dict[str, Any]], scaling: list[dict[str, Any]], pr: Path | None,
                 scaling_plot: Path | None, euroc: list[dict[str, Any]] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Place recognition evaluation ({header['date']})", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "## (a) VPR benchmarks (held out), Recall@N in %", ""]
    for name, scores in vpr.items():
        first = next(iter(scores.values()))
        lines += [f"### {name} ({first.queries} queries, {first.references} references)", "",
                  "| method | R@1 | R@5 | R@10 | time/query ms (p50) | of which describing ms |",
                  "|---|---|---|---|---|---|"]
        for method, s in scores.items():
            lines.append(f"| {method} | {_fmt(s.recall[1], True)} | {_fmt(s.recall[5], True)} | "
                         f"{_fmt(s.recall[10], True)} | {s.query_ms_p50:.2f} | {s.describe_ms_p50:.2f} |")
        lines += target_lines(scores)
        lines.append("")
    if loops:
        lines += ["## (b) Loop closure on synthetic routes", "",
                  f"Routes: {header.get('routes')}. A query is a loop when a searchable keyframe lies within "
                  f"{header.get('loop_radius_m')} m and 30°; a match is correct within "
                  f"{header.get('correct_radius_m')} m and 30°.", "",
                  "| descriptor | verification | loops / queries | detections | precision (all) | recall (all) | "
                  "recall @ 100 % precision | AP |", "|---|---|---|---|---|---|---|---|"]
        for desc, s in loops.items():
            for mode in ("without_verification", "with_verification"):
                m = s[mode]
                lines.append(f"| {desc} | {mode.split('_')[0]} | {s['loops']} / {s['queries']} | {m['detections']} | "
                             f"{_fmt(m['precision_all'], True)} | {_fmt(m['recall_all'], True)} | "
                             f"{_fmt(m['recall_at_100_precision'], True)} | {_fmt(m['average_precision'])} |")
        lines += ["", "| descriptor | rotation error ° p50 / p90 | translation direction error ° p50 / p90 | "
                      "geolocation error m p50 / p90 | describe ms p50 | keyframe (describe + features + query + "
                      "verify) ms p50 |", "|---|---|---|---|---|---|"]
        for desc, s in loops.items():
            r, d, g = s["rotation_err_deg"], s["direction_err_deg"], s["geolocation_err_m"]
            lines.append(f"| {desc} | {_fmt(r['p50'])} / {_fmt(r['p90'])} (n={r['n']}) | {_fmt(d['p50'])} / "
                         f"{_fmt(d['p90'])} (n={d['n']}) | {_fmt(g['p50'])} / {_fmt(g['p90'])} (n={g['n']}) | "
                         f"{_fmt(s['describe_ms']['p50'])} | {_fmt(s['keyframe_ms']['p50'])} |")
        if pr is not None:
            lines += ["", f"![PR curves]({pr.name})"]
        lines.append("")
    if scaling:
        lines += ["## (c) Keyframe database: query time vs size (one query, top 10, one thread)", "",
                  f"{header.get('scaling_dim')}-d clustered random unit descriptors.", "",
                  "| keyframes | exact p50 / p95 ms | exact build s | HNSW p50 / p95 ms | HNSW build s | "
                  "HNSW top-1 = exact top-1 |", "|---|---|---|---|---|---|"]
        for r in scaling:
            e, h = r["exact"], r["hnsw"]
            lines.append(f"| {r['size']:,} | {e['query_ms_p50']:.3f} / {e['query_ms_p95']:.3f} | {e['build_s']:.2f} | "
                         f"{h['query_ms_p50']:.3f} / {h['query_ms_p95']:.3f} | {h['build_s']:.1f} | "
                         f"{100 * h['top1_agrees_with_exact']:.1f} % |")
        if scaling_plot is not None:
            lines += ["", f"![query time vs size]({scaling_plot.name})"]
        lines.append("")
    if euroc:
        lines += ["## (d) EuRoC V1_01 loop pairs: verification and relative pose (left camera)", "",
                  "Only the revisit's rotation angle and distance are known (the dataset's ground truth); the angle "
                  "error is a lower bound of the rotation error. Metric: whether the translation has a length "
                  "(no scale source applies to a hand-held or flying camera without stereo).", "",
                  "| pair | same place | verified | inliers / matches | rotation ° (truth) | angle error ° | "
                  "metric | verify ms |", "|---|---|---|---|---|---|---|---|"]
        for r in euroc:
            truth = f" ({r['true_rotation_deg']:g})" if r["true_rotation_deg"] is not None else ""
            lines.append(f"| {r['pair']} | {'yes' if r['same_place'] else 'no'} | {'yes' if r['verified'] else 'no'} "
                         f"| {r['inliers']} / {r['matches']} | {_fmt(r['rotation_deg'])}{truth} | "
                         f"{_fmt(r['rotation_angle_error_deg'])} | {'yes' if r['metric'] else 'no'} | "
                         f"{r['verify_ms']:.1f} |")
        lines.append("")
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    payload = {"header": header, "vpr": {b: {m: s.to_dict() for m, s in r.items()} for b, r in vpr.items()},
               "loop_closure": loops, "scaling": scaling, "euroc_loop_pairs": euroc or []}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return md


#: EuRoC V1_01 loop pairs (../shared/data/README.md): (name, query image, match image, true rotation angle °,
#: true distance m); None where the dataset gives no figure, and a wrong place where both are None and
#: ``same_place`` is False.
EUROC_PAIRS = (("revisit", 1, 0, 37.5, 0.45, True), ("looser", 3, 2, None, None, True),
               ("other place", 2, 0, None, None, False))


def read_euroc_camera(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(K, radial-tangential distortion) of a EuRoC ``sensor.yaml`` (OpenCV's ``%YAML:1.0`` header skipped)."""
    import yaml

    text = "\n".join(line for line in Path(path).read_text().splitlines() if not line.startswith("%YAML"))
    data = yaml.safe_load(text)
    fu, fv, cu, cv = (float(v) for v in data["intrinsics"])
    return np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]]), np.asarray(data["distortion_coefficients"],
                                                                                    float)


def run_euroc_pairs(data_root: Path) -> list[dict[str, Any]]:
    """(d): the verifier of the shipped parameters (``config/perception.yaml``'s place recognition node; its
    camera_pose is a car's, so none here) on the EuRoC loop pairs; [] when they are absent."""
    from deep_vision.geometry.transforms import rotation_angle
    from deep_vision.params import load_params
    from deep_vision.pipeline.build import build_verifier
    from deep_vision.resources import default_params_path

    folder = Path(data_root) / "euroc_loop_pairs"
    if not (folder / "sensorLeft.yaml").is_file():
        logger.warning("no EuRoC loop pairs under %s: (d) skipped", data_root)
        return []
    K, D = read_euroc_camera(folder / "sensorLeft.yaml")
    verifier = build_verifier(load_params(default_params_path())["place_recognition_node"])
    verifier.set_camera_pose(None)
    features = {}
    rows = []
    for name, q, m, true_deg, true_m, same in EUROC_PAIRS:
        for i in (q, m):
            if i not in features:
                features[i] = verifier.extract(read_image(folder / f"left_img_{i}.png"), K, D)
        start = time.perf_counter()
        v = verifier.verify(features[q], features[m], K, K)
        ms = 1e3 * (time.perf_counter() - start)
        angle = float(np.degrees(rotation_angle(v.rotation))) if v.has_pose else None
        rows.append({"pair": f"img_{q} of img_{m} ({name})", "same_place": same, "verified": bool(v.verified),
                     "inliers": int(v.inliers), "matches": int(v.matches), "rotation_deg": angle,
                     "true_rotation_deg": true_deg, "true_distance_m": true_m,
                     "rotation_angle_error_deg": abs(angle - true_deg) if angle is not None and true_deg else None,
                     "metric": bool(v.metric), "verify_ms": ms})
    return rows


@dataclass
class PlaceEvalSettings:
    """What the evaluation runs; :data:`QUICK` fits in about two minutes on two cores."""

    vpr: bool = True
    euroc: bool = True
    routes: tuple[int, ...] = SYNTHETIC_EVAL_SEEDS
    route_frames: int = 600
    route_size: tuple[int, int] = (620, 188)
    keyframe_interval_s: float = 0.2
    exclude_recent_s: float = 20.0
    correct_radius_m: float = 10.0
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    scaling_queries: int = 200


FULL = PlaceEvalSettings()
QUICK = PlaceEvalSettings(routes=(SYNTHETIC_EVAL_FIRST_SEED,), route_frames=450, route_size=(320, 120),
                          sizes=(1_000, 10_000, 100_000), scaling_queries=100)


def evaluate(recognizer: PlaceRecognizer | None, data_root: Path, out: Path, settings: PlaceEvalSettings = FULL, *,
             command: str = "", progress_factory: Progress | None = None) -> Path:
    """Run (a), (b) and (c) and write the report; returns the markdown path.

    ``recognizer`` None evaluates the classical methods only.
    """
    from deep_vision.synthetic import SyntheticSequence

    if any(s < SYNTHETIC_EVAL_FIRST_SEED for s in settings.routes):
        logger.warning("routes %s are below %d: they may have been trained on", settings.routes,
                       SYNTHETIC_EVAL_FIRST_SEED)
    today = date.today().isoformat()
    stem = f"place-{today}"
    vpr: dict[str, dict[str, VprScores]] = {}
    if settings.vpr:
        benches = vpr_benchmarks(data_root)
        if not benches:
            logger.warning("no VPR benchmark folder under %s (vpr_corridor, vpr_nordland): (a) skipped", data_root)
        for bench, rgb in benches:
            matchers: list[GlobalMatcher] = []
            if recognizer is not None:
                matchers.append(NetworkMatcher(recognizer))
                if recognizer.local_name is not None:
                    matchers.append(RerankedNetworkMatcher(recognizer))
                else:
                    logger.warning("%s has no local_features output: no spatial re-ranking row",
                                   getattr(recognizer.backend, "model_path", "the model"))
            matchers += classical_matchers(bench)
            prog = progress_factory(len(matchers), f"(a) {bench.name}") if progress_factory else None
            vpr[f"{bench.name}: {bench.notes}"] = run_vpr(bench, matchers, rgb=rgb and recognizer is not None
                                                          and recognizer.wants_rgb, progress=prog)
    loops: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    # An RGB network sees the routes in colour; the SAD thumbnail takes their grey conversion.
    encoding = "rgb8" if recognizer is not None and recognizer.wants_rgb else "mono8"
    if settings.routes:
        descs: dict[str, PlaceRecognizer] = {}
        if recognizer is not None:
            descs["PlaceNet (ours)"] = recognizer
        w, h = settings.route_size
        descs["SAD thumbnail"] = PlaceRecognizer.classical("sad", sad_size=sad_size_for((h, w)))
        all_scores = {name: LoopScores() for name in descs}
        for seed in settings.routes:
            seq = SyntheticSequence(route_config(seed, settings.route_frames, w, h, encoding))
            images = [seq.image(i) for i in range(len(seq))]
            for name, rec in descs.items():
                prog = progress_factory(len(seq), f"(b) route {seed}, {name}") if progress_factory else None
                run_route(seq, rec, all_scores[name], keyframe_interval_s=settings.keyframe_interval_s,
                          exclude_recent_s=settings.exclude_recent_s, correct_radius_m=settings.correct_radius_m,
                          images=images, progress=prog)
        loops = {name: s.summary() for name, s in all_scores.items()}
        curves = {name: s.curves() for name, s in all_scores.items()}
    scaling: list[dict[str, Any]] = []
    dim = recognizer.dim if recognizer is not None else 256
    if settings.sizes:
        prog = progress_factory(len(settings.sizes), "(c) database scaling") if progress_factory else None
        scaling = run_scaling(settings.sizes, dim=dim, queries=settings.scaling_queries, progress=prog)
    euroc = run_euroc_pairs(data_root) if settings.euroc else []
    out.mkdir(parents=True, exist_ok=True)
    pr = pr_png(curves, out / f"{stem}-pr.png", "Loop closure on synthetic routes") if curves else None
    sp = scaling_png(scaling, out / f"{stem}-scaling.png") if scaling else None
    header = {
        "date": today, "command": command,
        "descriptor": recognizer.label if recognizer is not None else "none (classical baselines only)",
        "model": getattr(recognizer.backend, "model_path", "–") if recognizer is not None else "–",
        "data": str(data_root),
        "routes": ", ".join(f"world seed {s}" for s in settings.routes) +
                  f" ({settings.route_frames} frames at {settings.route_size[0]}x{settings.route_size[1]}"
                  f"{' in colour (SAD: their grey)' if encoding == 'rgb8' else ''}, "
                  f"keyframe every {settings.keyframe_interval_s} s, last {settings.exclude_recent_s} s excluded)",
        "loop_radius_m": 4.0, "correct_radius_m": settings.correct_radius_m, "scaling_dim": dim,
        "split": f"Nordland places {NORDLAND_EVAL_PLACES[0]}-{NORDLAND_EVAL_PLACES[1] - 1} and Corridor places "
                 f"{CORRIDOR_EVAL_PLACES[0]}-{CORRIDOR_EVAL_PLACES[1] - 1} (queries and references) are never "
                 f"trained on (Corridor places from {CORRIDOR_TRAIN_PLACES[0]} may be); synthetic worlds from seed "
                 f"{SYNTHETIC_EVAL_FIRST_SEED} are never trained on",
    }
    return write_report(out, stem, header, vpr, loops, scaling, pr, sp, euroc)


def update_card(model_path: Path, report_json: Path) -> Path:
    """Copy the held-out metrics of a report into the model card beside ``model_path``."""
    from deep_vision.inference.modelcard import ModelCard, card_path_for

    card_path = card_path_for(Path(model_path))
    card = ModelCard.load(card_path)
    report = json.loads(Path(report_json).read_text())
    metrics = dict(card.metrics or {})
    for bench, methods in report["vpr"].items():
        # "nordland[0:900]: winter queries vs ..." -> nordland_0_900
        key = re.sub(r"[^0-9A-Za-z]+", "_", bench.split(": ")[0]).strip("_")
        for method, s in methods.items():
            if s.get("learned", method.startswith("PlaceNet")):
                name = f"held_out_{key}_reranked_recall" if s.get("two_stage") else f"held_out_{key}_recall"
                metrics[name] = {f"R@{n}": round(v, 4) for n, v in s["recall"].items()}
        metrics[f"held_out_{key}_baselines_recall_at_1"] = {
            m: round(s["recall"]["1"], 4) for m, s in methods.items()
            if not s.get("learned", m.startswith("PlaceNet"))}
    net = report["loop_closure"].get("PlaceNet (ours)")
    if net:
        metrics["synthetic_loop_closure"] = {
            "routes": report["header"]["routes"],
            "recall_at_100_precision_verified": round(net["with_verification"]["recall_at_100_precision"], 4),
            "recall_at_100_precision_unverified": round(net["without_verification"]["recall_at_100_precision"], 4),
        }
    metrics["report"] = Path(report_json).with_suffix(".md").name
    card.metrics = metrics
    card.save(card_path)
    return card_path


def evaluate_from_cli(args: Any) -> int:
    """``deep-vision evaluate place`` (args: model, backend, threads, data, out, quick, update_card)."""
    from deep_vision.errors import ModelError
    from deep_vision.eval.progress import cli_command, progress_bars

    model = args.model
    if model is None:
        from deep_vision.resources import default_model_path

        try:
            model = default_model_path("place")
        except ModelError as exc:
            logger.warning("%s; evaluating the classical baselines only", exc)
    recognizer = None
    if model is not None and str(model).lower() != "none":
        recognizer = PlaceRecognizer.from_model(model, backend=args.backend, threads=args.threads or None)
    with progress_bars() as progress:
        md = evaluate(recognizer, Path(args.data), Path(args.out), QUICK if getattr(args, "quick", False) else FULL,
                      command=cli_command(), progress_factory=progress)
    print(md.read_text())
    print(f"report: {md}")
    if getattr(args, "update_card", False) and recognizer is not None:
        print(f"model card updated: {update_card(Path(model), md.with_suffix('.json'))}")
    return 0
