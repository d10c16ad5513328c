"""Keyframe selection, the FAISS keyframe database (exact/HNSW, recency limit, save/load without pickle) and the
loop-closure detector's bookkeeping (recency window, sessions after a time jump, map reuse)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from deep_vision.errors import ConfigError, DatasetError
from deep_vision.estimators.loop_closure import (
    KeyframeDatabase,
    KeyframeGate,
    KeyframeSelector,
    LocalFeatures,
    LoopClosureDetector,
)
from deep_vision.estimators.place import PlaceRecognizer

S = 1_000_000_000
T0 = 1_700_000_000 * S


def unit_rows(n, dim=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_keyframe_selector_criteria():
    sel = KeyframeSelector(interval_s=1.0)
    assert sel.is_keyframe(T0) and not sel.needs_descriptor  # time alone: no descriptor needed to decide
    sel.accept(T0)
    assert not sel.is_keyframe(T0 + S // 2) and sel.is_keyframe(T0 + S)
    assert not sel.is_keyframe(T0 - S)  # never backwards
    dist = KeyframeSelector(interval_s=0.0, distance_m=5.0)
    dist.accept(T0, position=np.zeros(3))
    assert not dist.is_keyframe(T0 + S, position=[3.0, 0, 0]) and dist.is_keyframe(T0 + S, position=[4.0, 3.0, 0])
    near = KeyframeSelector(interval_s=0.0, distance_m=0.5)  # under a metre works too
    near.accept(T0, position=np.zeros(3))
    assert not near.is_keyframe(T0 + S, position=[0.4, 0, 0]) and near.is_keyframe(T0 + S, position=[0.6, 0, 0])
    look = KeyframeSelector(interval_s=0.0, max_similarity=0.9, min_interval_s=0.2)
    d = unit_rows(2)
    look.accept(T0, descriptor=d[0])
    assert look.needs_descriptor
    assert not look.is_keyframe(T0 + S, descriptor=d[0]) and look.is_keyframe(T0 + S, descriptor=d[1])
    assert not look.is_keyframe(T0 + S // 10, descriptor=d[1])  # closer than min_interval_s
    assert look.is_keyframe(T0 + S // 5, descriptor=d[1])  # exactly min_interval_s on: allowed
    every = KeyframeSelector(interval_s=0.0)
    every.accept(T0)
    assert every.is_keyframe(T0 + 1) and not every.is_keyframe(T0)  # never two at one stamp
    with pytest.raises(ConfigError, match="interval_s"):
        KeyframeSelector(interval_s=-1.0)
    KeyframeSelector(max_similarity=1.0), KeyframeSelector(max_similarity=-1.0)  # the bounds are allowed
    for bad in (1.01, -1.5):
        with pytest.raises(ConfigError, match=rf"max_similarity must lie in \[-1, 1\], got {bad}"):
            KeyframeSelector(max_similarity=bad)


def test_settings_are_checked_at_their_edges():
    from deep_vision.estimators.loop_closure import GeometricVerifier

    GeometricVerifier(min_inlier_ratio=0.0), GeometricVerifier(min_inlier_ratio=1.0)
    with pytest.raises(ConfigError, match=r"min_inlier_ratio must lie in \[0, 1\], got -0.1"):
        GeometricVerifier(min_inlier_ratio=-0.1)
    with pytest.raises(ConfigError, match="ransac_px must be positive, got 0"):
        GeometricVerifier(ransac_px=0)
    GeometricVerifier(min_inliers=5), GeometricVerifier(ransac_px=1.0)
    with pytest.raises(ConfigError, match="exclude_recent_s must be 0 or more, got -0.5"):
        LoopClosureDetector(FakeRecognizer(unit_rows(2)), exclude_recent_s=-0.5)
    assert LoopClosureDetector(FakeRecognizer(unit_rows(2)), top_k=1).top_k == 1
    with pytest.raises(ConfigError, match="top_k must be at least 1, got 0"):
        LoopClosureDetector(FakeRecognizer(unit_rows(2)), top_k=0)
    with pytest.raises(ConfigError, match="min_inliers must be at least 5"):
        GeometricVerifier(min_inliers=4)
    with pytest.raises(ConfigError, match=r"min_inlier_ratio must lie in \[0, 1\], got 1.5"):
        GeometricVerifier(min_inlier_ratio=1.5)
    assert KeyframeDatabase(8, approximate_above=1).approximate_above == 1 and KeyframeDatabase(1).dim == 1
    with pytest.raises(ConfigError, match="descriptor dimension must be positive, got 0"):
        KeyframeDatabase(0)
    with pytest.raises(ConfigError, match="approximate_above must be at least 1, got 0"):
        KeyframeDatabase(8, approximate_above=0)


def test_a_frame_without_features_verifies_nothing():
    from deep_vision.estimators.loop_closure import GeometricVerifier

    none = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), (64, 48))
    some = LocalFeatures(np.random.rand(40, 2).astype(np.float32) * 60,
                         np.random.default_rng(0).integers(0, 255, (40, 32), dtype=np.uint8), (64, 48))
    v = GeometricVerifier(min_inliers=5).verify(none, some)
    image = np.random.default_rng(6).integers(0, 255, (96, 128), dtype=np.uint8)
    plain = GeometricVerifier().extract(image)
    no_k = GeometricVerifier().extract(image, None, np.array([0.1, 0.0, 0.0, 0.0]))  # distortion without K: unused
    assert len(plain) > 50 and np.array_equal(no_k.keypoints, plain.keypoints)
    blank = GeometricVerifier().extract(np.zeros((48, 64), np.uint8))
    assert blank.keypoints.shape == (0, 2) and blank.descriptors.shape == (0, 32) and blank.image_size == (64, 48)
    sift = GeometricVerifier("sift").extract(np.zeros((48, 64), np.uint8))
    assert sift.descriptors.shape == (0, 128) and sift.descriptors.dtype == np.float32
    assert (v.verified, v.inliers, v.matches, v.model) == (False, 0, 0, "none")


def test_exact_search_limit_and_hnsw_switch():
    x = unit_rows(300)
    db = KeyframeDatabase(32, approximate_above=200)
    for i in range(150):
        assert db.add(x[i], T0 + i * S) == i
    assert db.index_kind == "exact"
    sims, ids = db.search(x[42], 3)
    assert ids[0] == 42 and sims[0] == pytest.approx(1.0, abs=1e-5) and np.all(np.diff(sims) <= 0)
    sims, ids = db.search(x[42], 3, limit=40)  # only ids 0..39 are searchable
    assert len(ids) == 3 and ids.max() < 40
    assert db.search(x[0], 1, limit=40)[1][0] == 0  # the first of them too
    with pytest.raises(ValueError, match=r"descriptor: expected length 32, got 8$"):
        db.search(np.zeros(8, np.float32), 1)
    assert len(db.search(x[0], 5, limit=0)[1]) == 0
    small = KeyframeDatabase(32, approximate_above=200)
    small.add_batch(x[:10], T0 + np.arange(10) * S)
    assert small.index_kind == "exact" and small.search(x[3], 1)[1][0] == 3
    db.add_batch(x[150:], T0 + np.arange(150, 300) * S)
    assert len(db) == 300 and db.index_kind == "hnsw" and set(db.sessions) == {0}
    agree = [db.search(x[i], 1)[1][0] == i for i in range(0, 300, 7)]
    assert np.mean(agree) > 0.95
    _, ids = db.search(x[250], 5, limit=100)
    assert ids.max() < 100 and db.search(x[0], 1, limit=100)[1][0] == 0  # HNSW with a limit keeps id 0
    with pytest.raises(ValueError, match=r"descriptor: expected length 32, got 8$"):
        db.add(np.zeros(8, np.float32), T0)
    assert [len(a) for a in db.search(x[0], 5, limit=-3)] == [0, 0]  # a negative limit: nothing searchable
    for rows, stamps in ((np.zeros((2, 8)), [T0, T0]), (np.zeros((2, 32)), [T0])):  # wrong width; wrong count
        with pytest.raises(ValueError, match=r"expected \[N x 32\] with N stamps"):
            db.add_batch(rows, stamps)


def test_save_load_round_trip_without_pickle(tmp_path):
    x = unit_rows(60)
    db = KeyframeDatabase(32, descriptor="test 32", approximate_above=50)
    feats = LocalFeatures(np.random.rand(7, 2).astype(np.float32), np.random.randint(0, 255, (7, 32), np.uint8),
                          (320, 120))
    first = LocalFeatures(np.random.rand(4, 2).astype(np.float32), np.random.randint(0, 255, (4, 32), np.uint8),
                          (320, 120))
    K = np.array([[100.0, 0, 160], [0, 100, 60], [0, 0, 1]])
    for i in range(60):
        fix = (51.75 + i * 1e-5, -1.25, np.nan if i == 7 else 60.0)  # a fix may lack its altitude
        db.add(x[i], T0 + i * S, session=i // 30, gps=fix if i % 2 else None,
               K=K if i < 10 else None, features=feats if i == 3 else first if i == 0 else None)
    assert db.index_kind == "hnsw"
    db.save(tmp_path / "map")
    db.save(tmp_path / "map")  # saving over a map (the node saves on a timer) replaces it
    meta = json.loads((tmp_path / "map" / "database.json").read_text())
    assert meta["format"] == 1  # maps written by earlier versions stay readable only while this holds
    assert meta["keyframes"] == 60 and meta["sessions"] == 2 and meta["keyframes_with_gps"] == 30
    with np.load(tmp_path / "map" / "keyframes.npz", allow_pickle=False) as data:  # no object arrays inside
        assert data["descriptors"].shape == (60, 32) and "hnsw_index" in data.files  # the graph, not rebuilt
    back = KeyframeDatabase.load(tmp_path / "map", descriptor="test 32")
    assert len(back) == 60 and back.index_kind == "hnsw"
    exact = KeyframeDatabase.load(tmp_path / "map", approximate_above=1000)  # small enough for exact search now
    assert exact.index_kind == "exact" and exact.search(x[17], 1)[1][0] == 17
    assert KeyframeDatabase.load(tmp_path / "map", approximate_above=60).index_kind == "exact"  # at the limit
    assert np.array_equal(back.descriptors, db.descriptors) and np.array_equal(back.stamps_ns, db.stamps_ns)
    kf = back.keyframe(5)
    assert kf.session == 0 and kf.has_gps and kf.latitude == pytest.approx(51.75005) and np.allclose(kf.K, K)
    assert not back.keyframe(4).has_gps and back.keyframe(12).K is None and back.keyframe(40).session == 1
    f = back.features(3)
    assert np.array_equal(f.keypoints, feats.keypoints) and np.array_equal(f.descriptors, feats.descriptors)
    assert f.image_size == (320, 120) and back.features(4) is None
    assert np.array_equal(back.features(0).keypoints, first.keypoints)  # the first keyframe's slice too
    for bad in (60, -1):
        with pytest.raises(IndexError, match=rf"keyframe id {bad} out of range 0\.\.59$"):
            back.keyframe(bad)
    assert [len(a) for a in back.search(x[17], 0)] == [0, 0]  # k = 0: nothing
    assert back.search(x[17], 1)[1][0] == 17
    with pytest.raises(ConfigError, match="cannot be searched"):
        KeyframeDatabase.load(tmp_path / "map", descriptor="another descriptor")
    with pytest.raises(DatasetError, match="no database.json"):
        KeyframeDatabase.load(tmp_path / "nothing")
    meta = (tmp_path / "map" / "database.json").read_text()
    (tmp_path / "map" / "database.json").write_text(meta[: len(meta) // 2])  # cut short
    with pytest.raises(DatasetError, match="database.json"):
        KeyframeDatabase.load(tmp_path / "map")
    (tmp_path / "map" / "database.json").write_text(meta)
    (tmp_path / "map" / "keyframes.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read .*keyframes.npz"):
        KeyframeDatabase.load(tmp_path / "map")
    (tmp_path / "map" / "keyframes.npz").unlink()
    with pytest.raises(DatasetError, match="cannot read .*keyframes.npz"):
        KeyframeDatabase.load(tmp_path / "map")


def test_descriptor_label_names_the_network_and_its_weights():
    from types import SimpleNamespace

    from deep_vision.estimators.loop_closure import descriptor_label

    net = SimpleNamespace(descriptor="network", image_size=(320, 240), in_channels=1, model_id="0123456789abcdef0123")
    assert descriptor_label(net) == "network 320x240x1 sha256:0123456789abcdef"


class FakeRecognizer(PlaceRecognizer):
    """Descriptors looked up by the frame's first pixel value (image i shows place i)."""

    def __init__(self, table):
        super().__init__(None, descriptor="sad", sad_size=(8, 8))
        self.table = table
        self._dim = table.shape[1]

    def describe(self, image):
        return self.table[int(image[0, 0])]


def frame(i):
    return np.full((8, 8), i, np.uint8)


def test_detector_recency_window_sessions_and_map_reuse(tmp_path):
    table = unit_rows(50)
    table[30] = table[2]  # place 30 looks exactly like place 2 (a revisit)
    table[31] = table[29]  # ... and 31 like 29, only 2 s earlier (not a loop)
    det = LoopClosureDetector(FakeRecognizer(table), exclude_recent_s=5.0, top_k=1,
                              keyframes=KeyframeSelector(interval_s=0.0))
    results = {}
    for i in range(32):
        results[i] = det.process(frame(i), T0 + i * S)
    assert all(r is not None for r in results.values()) and len(det.db) == 32 == det.counters["keyframes"]
    assert det.counters["queries"] == 32
    assert results[30].candidates[0].match_id == 2 and results[30].candidates[0].similarity == pytest.approx(1.0)
    assert results[31].candidates[0].match_id != 29  # within the 5 s window: excluded
    assert results[30].candidates[0].inliers == 0 and not results[30].candidates[0].verified  # no verifier
    assert det.query(frame(30), T0 + 40 * S)[0].match_id in (2, 30)  # from the image alone
    with pytest.raises(ValueError, match="give an image or a descriptor"):
        det.query(None, T0 + 40 * S)
    assert det.searchable_limit(T0 + 31 * S) == 27  # keyframes up to 26 s
    # Repeated stamp: skipped. Time jump backwards: a new session, the database is kept.
    assert det.process(frame(5), T0 + 31 * S) is None and det.counters["repeated_stamp"] == 1
    replay = det.process(frame(2), T0 + 2 * S)
    assert det.session == 1 and det.counters["new_session_time_backwards"] == 1
    assert replay.query_id == 32 and replay.candidates[0].match_id in (2, 30)  # the first pass is searchable
    after = det.process(frame(3), T0 + 3 * S)
    assert after.query_id == 33 and after.candidates[0].match_id == 3
    assert det.db.stamps_ns[32] == T0 + 2 * S and list(det.db.sessions[31:]) == [0, 1, 1]
    # Save, load into a new detector: earlier sessions are never excluded.
    det.save(tmp_path / "map")
    db = LoopClosureDetector.load_database(tmp_path / "map", det.recognizer)
    det2 = LoopClosureDetector(FakeRecognizer(table), database=db, exclude_recent_s=5.0, top_k=1)
    assert det2.session == 2 and len(det2.db) == 34
    r = det2.process(frame(10), T0 + 10 * S + 1)
    assert r.query_id == 34 and r.candidates[0].match_id == 10
    with pytest.raises(ConfigError, match="holds"):
        LoopClosureDetector.load_database(tmp_path / "map", PlaceRecognizer.classical("sad", sad_size=(16, 8)))


def _stream(n=120, seed=3):
    """10 Hz stamps with jitter, one repeated stamp, and the stream played again from its start (time backwards)."""
    rng = np.random.default_rng(seed)
    stamps = [T0 + int(i * 0.1 * S + rng.integers(-20, 20) * 1_000_000) for i in range(n)]
    stamps.insert(40, stamps[39])
    return stamps + stamps[:30]


@pytest.mark.parametrize("interval_s, min_interval_s", [(0.5, 0.0), (0.3, 0.45), (0.2, 0.0)])
def test_keyframe_gate_admits_exactly_the_selectors_keyframes(interval_s, min_interval_s):
    table = unit_rows(1)

    def detector():
        return LoopClosureDetector(FakeRecognizer(table), exclude_recent_s=1.0, top_k=1,
                                   keyframes=KeyframeSelector(interval_s=interval_s, min_interval_s=min_interval_s))

    every, gated = detector(), detector()
    gate = gated.keyframes.arrival_gate()
    assert isinstance(gate, KeyframeGate)
    keyframes_every, keyframes_gated, admitted = [], [], 0
    for stamp in _stream():
        if every.process(frame(0), stamp) is not None:
            keyframes_every.append(stamp)
        if gate.admit(stamp):
            admitted += 1
            assert gated.process(frame(0), stamp) is not None  # every admitted frame becomes a keyframe
            keyframes_gated.append(stamp)
    assert keyframes_gated == keyframes_every and admitted == len(keyframes_every)
    assert gated.session == every.session == 1  # the replay started a new session in both


def test_keyframe_gate_reopens_after_a_lost_keyframe_and_is_off_for_other_criteria():
    gate = KeyframeSelector(interval_s=0.5).arrival_gate()
    assert gate.admit(T0) and not gate.admit(T0 + S // 10)
    gate.reopen()  # the admitted frame could not be decoded: the next arrival becomes the keyframe
    assert gate.admit(T0 + 2 * S // 10) and not gate.admit(T0 + 3 * S // 10)
    assert not gate.admit(T0 + 2 * S // 10)  # a repeated stamp is not a keyframe
    assert gate.admit(T0 + 7 * S // 10) and gate.admit(T0)  # interval passed; time went backwards
    # Distance or appearance decide on what the frame shows or where it is: every frame goes to the detector.
    assert KeyframeSelector(interval_s=0.5, distance_m=2.0).arrival_gate() is None
    assert KeyframeSelector(interval_s=0.5, max_similarity=0.9).arrival_gate() is None
    assert KeyframeSelector(interval_s=0.0).arrival_gate() is None
    with pytest.raises(ConfigError, match="positive"):
        KeyframeGate(0.0)


def test_detector_takes_keyframes_by_distance_from_positions():
    det = LoopClosureDetector(FakeRecognizer(unit_rows(20)),
                              keyframes=KeyframeSelector(interval_s=0.0, distance_m=5.0))
    taken = [i for i in range(12) if det.process(frame(i), T0 + i * S, position=np.array([1.0 * i, 0.0, 0.0]))]
    assert taken == [0, 5, 10]


def test_add_stores_the_frames_features_for_later_verification():
    from deep_vision.estimators.loop_closure import GeometricVerifier

    det = LoopClosureDetector(FakeRecognizer(unit_rows(4)), verifier=GeometricVerifier())
    image = np.random.default_rng(5).integers(0, 255, (96, 128), dtype=np.uint8)
    image[0, 0] = 1  # place 1
    kf = det.add(image, T0)
    assert len(det.db.features(kf)) > 50 and det.db.features(kf).image_size == (128, 96)  # ORB corners of the noise
    assert det.add(image, T0) is None  # a repeated stamp: not stored twice
    t0 = time.perf_counter()
    r = det.process(image, T0 + S)
    wall_ms = (time.perf_counter() - t0) * 1e3
    t = r.timings_ms
    assert t["describe_ms"] + t["features_ms"] + t["query_verify_ms"] <= t["total_ms"] <= wall_ms
    assert t["features_ms"] > 0.01  # ORB on 128 x 96 (measured about 1 ms): milliseconds, not seconds


def test_geolocation_uses_verified_candidates_only_by_default():
    from deep_vision.estimators.loop_closure import LoopCandidate

    table = unit_rows(4)
    for verified_only in (True, False):
        kwargs = {} if verified_only else {"geolocate_verified_only": False}
        det = LoopClosureDetector(FakeRecognizer(table), **kwargs)
        det.add(frame(1), T0, gps=(51.75, -1.25, 60.0))
        unverified = [LoopCandidate(0, T0, 0.9)]
        geo = det.geolocate(unverified)
        assert (geo is None) == verified_only
        assert det.geolocate([LoopCandidate(0, T0, 0.9, verified=True)]) is not None


def test_sessions_saving_and_loading_at_the_edges(tmp_path):
    """An empty session is not counted; a map is saved into a new folder (parents made) and an empty one says 0
    sessions; a database of exactly approximate_above keyframes stays exact when loaded; threads=None leaves
    FAISS's thread count alone."""
    det = LoopClosureDetector(FakeRecognizer(unit_rows(12)))
    det.new_session()
    assert det.session == 0  # nothing happened in it
    det.process(frame(1), T0)
    det.new_session()
    assert det.session == 1
    empty = KeyframeDatabase(32, threads=None)
    empty.save(tmp_path / "maps" / "empty")
    assert json.loads((tmp_path / "maps" / "empty" / "database.json").read_text())["sessions"] == 0
    db = KeyframeDatabase(32, approximate_above=10)
    db.add_batch(unit_rows(10), T0 + np.arange(10) * S)
    db.save(tmp_path / "ten")
    assert KeyframeDatabase.load(tmp_path / "ten").index_kind == "exact"


def test_a_stored_index_of_another_size_is_refused(tmp_path):
    """keyframes.npz's HNSW graph must hold the database's keyframes: one of another map is named, not searched."""
    for name, n in (("a", 60), ("b", 70)):
        db = KeyframeDatabase(32, approximate_above=50)
        db.add_batch(unit_rows(n, seed=n), T0 + np.arange(n) * S)
        db.save(tmp_path / name)
    with np.load(tmp_path / "a" / "keyframes.npz") as a, np.load(tmp_path / "b" / "keyframes.npz") as b:
        arrays = {**dict(a), "hnsw_index": b["hnsw_index"]}
    np.savez(tmp_path / "a" / "keyframes.npz", **arrays)
    with pytest.raises(DatasetError, match=r"stored HNSW index holds 70x32, expected 60x32"):
        KeyframeDatabase.load(tmp_path / "a")


def test_database_grows_past_its_buffer_and_switches_index_above_the_limit():
    big = KeyframeDatabase(8)
    big.add_batch(unit_rows(3000, dim=8), T0 + np.arange(3000) * S)  # more than twice the first buffer at once
    assert len(big) == 3000 and big.search(unit_rows(3000, dim=8)[2999], 1)[1][0] == 2999
    db = KeyframeDatabase(8, approximate_above=5)
    rows = unit_rows(6, dim=8)
    for i in range(5):
        db.add(rows[i], T0 + i * S)
    assert db.index_kind == "exact"  # at the limit
    db.add(rows[5], T0 + 5 * S)
    assert db.index_kind == "hnsw"  # above it


def test_detector_verifies_past_a_keyframe_without_features_and_keys_on_appearance():
    from deep_vision.estimators.loop_closure import GeometricVerifier

    table = unit_rows(8)
    table[3] = table[0] * 0.9 + table[1] * 0.4
    table[3] /= np.linalg.norm(table[3])  # place 3 looks most like 0, then like 1
    det = LoopClosureDetector(FakeRecognizer(table), verifier=GeometricVerifier(), top_k=2, exclude_recent_s=0.0)
    det.add(None, T0, descriptor=table[0])  # no image: no features to verify against
    image = np.random.default_rng(7).integers(0, 255, (96, 128), dtype=np.uint8)
    image[0, 0] = 1
    det.add(image, T0 + S)
    query = image.copy()
    query[0, 0] = 3
    candidates = det.query(query, T0 + 2 * S)
    assert [c.match_id for c in candidates] == [0, 1]
    assert not candidates[0].verified and candidates[1].verified  # the first could not be checked, the second was
    look = LoopClosureDetector(FakeRecognizer(table), keyframes=KeyframeSelector(interval_s=0.0, max_similarity=0.9))
    taken = [i for i, place in enumerate([0, 0, 0, 1, 1, 2]) if look.process(frame(place), T0 + i * S)]
    assert taken == [0, 3, 5]  # a keyframe when the view changes


def test_keyframes_npz_with_pickled_objects_is_refused(tmp_path):
    """Maps load without pickle: an object array where the descriptors should be is refused, not unpickled."""
    db = KeyframeDatabase(32)
    db.add_batch(unit_rows(3), T0 + np.arange(3) * S)
    db.save(tmp_path / "map")
    with np.load(tmp_path / "map" / "keyframes.npz") as data:
        arrays = dict(data)
    arrays["descriptors"] = np.array([{"not": "numbers"}] * 3, dtype=object)
    np.savez(tmp_path / "map" / "keyframes.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        KeyframeDatabase.load(tmp_path / "map")


def test_a_keyframe_without_intrinsics_is_verified_without_them():
    """The query has K, the keyframe was stored without: the check falls back to the uncalibrated models."""
    from deep_vision.estimators.loop_closure import GeometricVerifier

    det = LoopClosureDetector(FakeRecognizer(unit_rows(4)), verifier=GeometricVerifier(), exclude_recent_s=0.0)
    image = np.random.default_rng(7).integers(0, 255, (96, 128), dtype=np.uint8)
    image[0, 0] = 1
    det.add(image, T0)  # no K
    (c,) = det.query(image, T0 + S, K=np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]]))
    assert c.verified and c.verification.model in ("fundamental", "homography") and not c.has_relative_pose


def test_a_map_refuses_other_local_features(tmp_path, synthetic):
    """A keyframe database keeps which local features its keyframes carry: verifying them with others would
    compare ORB bits with float descriptors (or SIFT with learned ones); the node refuses at start."""
    from deep_vision.pipeline.build import build_loop_detector
    from deep_vision.stages.place import PlaceStage

    p = {"descriptor": "sad", "sad_width": 64, "sad_height": 24, "keyframe_interval_s": 0.0, "loop_scale": "none"}
    detector = build_loop_detector({**p, "features": "orb"})
    for i, image in enumerate(synthetic.images()):
        if i == 4:
            break
        detector.process(image, int(synthetic.stamps_ns[i]), K=synthetic.renderer.K)
    detector.save(tmp_path / "map")
    stage = PlaceStage.from_params({**p, "features": "orb", "database_path": str(tmp_path / "map")})
    assert len(stage.detector.db) == 4
    with pytest.raises(ConfigError, match="parameter 'features' \\(sift\\) differs .* \\(.*map: orb\\)"):
        PlaceStage.from_params({**p, "features": "sift", "database_path": str(tmp_path / "map")})
