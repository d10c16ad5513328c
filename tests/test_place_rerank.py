"""Two-stage place recognition: the spatial scores of SpatialReranker (mutual nearest neighbours agreeing with one
homography, or voting for one grid shift), re-ordering of the top candidates, and the shipped model's local
features on ONNX Runtime and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, small_world_config
from deep_vision.estimators import LocalMap, PlaceRecognizer, SpatialReranker


def _map(field: np.ndarray, x0: int, y0: int, w: int = 8, h: int = 4) -> LocalMap:
    """The w x h window at (x0, y0) of a [H x W x D] feature field, as a LocalMap (unit-norm cells)."""
    cells = field[y0 : y0 + h, x0 : x0 + w].reshape(w * h, -1).astype(np.float32)
    return LocalMap(cells / np.linalg.norm(cells, axis=1, keepdims=True), (w, h))


@pytest.fixture
def scene():
    return np.random.default_rng(0).normal(size=(8, 14, 32))


def test_shift_score_is_the_largest_group_sharing_one_shift(scene):
    shift = SpatialReranker(score="shift")
    query = _map(scene, 0, 0)
    assert shift.spatial_score(query, query) == 1.0
    # The same scene seen 2 cells to the right and 1 down: the 6 x 3 overlap matches with one shift.
    assert shift.spatial_score(query, _map(scene, 2, 1)) == pytest.approx(18 / 32)
    other = _map(np.random.default_rng(1).normal(size=(8, 14, 32)), 0, 0)
    assert shift.spatial_score(query, other) < 0.15
    # Matches that all land on cells of the candidate but with scattered shifts count only their largest group.
    perm = np.random.default_rng(2).permutation(32)
    scrambled = LocalMap(query.cells[perm], query.grid)
    assert shift.spatial_score(query, scrambled) <= 2 / 32
    with pytest.raises(ValueError, match="local maps differ"):
        shift.spatial_score(query, _map(scene, 0, 0, w=6))


def _zoomed(field: np.ndarray, w: int = 8, h: int = 4) -> LocalMap:
    """The w x h window at (0, 0) seen after a step forward: the centre half of each axis fills the grid (scale 2
    about the window's centre), each cell the feature of the nearest cell of the field."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys = np.clip(np.round(cy + (np.arange(h) - cy) / 2).astype(int), 0, h - 1)
    xs = np.clip(np.round(cx + (np.arange(w) - cx) / 2).astype(int), 0, w - 1)
    cells = field[ys][:, xs].reshape(w * h, -1).astype(np.float32)
    return LocalMap(cells / np.linalg.norm(cells, axis=1, keepdims=True), (w, h))


def test_homography_score_takes_a_change_of_scale():
    """On the shipped 16 x 8 grid: a step forward scales the layout about the centre, so no single shift holds many
    of the matches but one homography holds them all; a shift alone scores as the shift vote scores it; an unrelated
    place keeps a low score (a homography fits some chance matches too: about 10 % of the cells, against 2 % for the
    shift vote), the same from call to call."""
    field = np.random.default_rng(0).normal(size=(12, 22, 32))
    homography, shift = SpatialReranker(), SpatialReranker(score="shift")
    assert homography.score == "homography" and homography.top_k == 5 and homography.weight == 0.5
    query, zoomed = _map(field, 0, 0, 16, 8), _zoomed(field, 16, 8)
    pa, _ = SpatialReranker.mutual_matches(query, zoomed)
    assert len(pa) >= 24  # one cell of the field fills several zoomed cells: one of them is mutual
    assert homography.spatial_score(query, zoomed) == pytest.approx(len(pa) / 128)
    assert shift.spatial_score(query, zoomed) < 0.25 * homography.spatial_score(query, zoomed)
    assert homography.spatial_score(query, query) == 1.0
    assert homography.spatial_score(query, _map(field, 2, 1, 16, 8)) == pytest.approx(14 * 7 / 128)
    other = _map(np.random.default_rng(1).normal(size=(12, 22, 32)), 0, 0, 16, 8)
    assert homography.spatial_score(query, other) < 0.15
    assert len({homography.spatial_score(query, other) for _ in range(5)}) == 1
    with pytest.raises(Exception, match="score must be"):
        SpatialReranker(score="affine")


def test_rerank_reorders_the_top_k_and_keeps_the_rest(scene):
    query = _map(scene, 0, 0)
    noise = [_map(np.random.default_rng(10 + i).normal(size=(8, 14, 32)), 0, 0) for i in range(4)]
    candidates = [noise[0], noise[1], _map(scene, 1, 0), noise[2], noise[3]]
    sims = [0.80, 0.78, 0.70, 0.69, 0.68]  # the true place third by global similarity
    order, scores = SpatialReranker(top_k=3, weight=1.0, score="shift").rerank(sims, query, candidates)
    assert list(order) == [2, 0, 1, 3, 4]
    assert scores[0] == pytest.approx(0.70 + 28 / 32) and len(scores) == 3
    assert np.all(np.diff(scores) <= 0)
    # Outside the top k nothing moves, even the true place.
    order, _ = SpatialReranker(top_k=2).rerank(sims, query, candidates)
    assert list(order) == [0, 1, 2, 3, 4]
    # Weight 0: the global order.
    assert list(SpatialReranker(weight=0.0).rerank(sims, query, candidates)[0]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="similarities"):
        SpatialReranker().rerank(sims[:2], query, candidates)
    with pytest.raises(Exception, match="top_k"):
        SpatialReranker(top_k=0)


def test_local_map_from_network_output():
    out = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)  # D=2, H=3, W=4
    m = LocalMap.from_output(out)
    assert m.grid == (4, 3) and m.cells.shape == (12, 2)
    assert list(m.cells[5]) == [out[0, 0, 1, 1], out[0, 1, 1, 1]]  # row-major: cell (x=1, y=1)
    with pytest.raises(Exception, match="local_features"):
        LocalMap.from_output(out[0])


@pytest.fixture(scope="module")
def real_frames():
    """Two consecutive frames of a synthetic drive."""
    from deep_vision.synthetic import SyntheticSequence

    seq = SyntheticSequence(small_world_config(frames=2, width=320, height=120))
    return [seq.image(0), seq.image(1)]


def test_shipped_model_gives_local_features_on_onnxruntime_and_torch(real_frames):
    onnx_rec = PlaceRecognizer.from_model(REPO / "models" / "place.onnx", backend="onnxruntime:cpu")
    torch_rec = PlaceRecognizer.from_model(REPO / "models" / "place.pt", backend="torch:cpu")
    frame = real_frames[0]
    d, local = onnx_rec.describe_local(frame)
    assert onnx_rec.local_name == "local_features" and local is not None
    assert local.grid == (16, 8) and local.cells.shape == (128, 192)
    assert np.allclose(np.linalg.norm(local.cells, axis=1), 1.0, atol=1e-4)
    assert np.allclose(d, onnx_rec.describe(frame), atol=1e-6)
    d_t, local_t = torch_rec.describe_local(frame)
    assert np.allclose(d, d_t, atol=1e-4) and np.allclose(local.cells, local_t.cells, atol=1e-4)
    # Consecutive frames of a drive score far above a frame against its mirror image.
    _, nxt = onnx_rec.describe_local(real_frames[1])
    _, mirrored = onnx_rec.describe_local(np.ascontiguousarray(frame[:, ::-1]))
    for reranker in (SpatialReranker(), SpatialReranker(score="shift")):
        assert reranker.spatial_score(local, nxt) > 2 * reranker.spatial_score(local, mirrored)
    assert PlaceRecognizer.classical("sad").describe_local(frame)[1] is None
