"""Place-recognition evaluation: VPR folder readers and splits, recall@N / PR metrics, the classical baselines on
real Corridor images, the shipped PlaceNet against SAD on held-out Nordland, database scaling, the report (with
PR-curve PNG) and ``deep-vision evaluate place``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO
from deep_vision.eval import place_eval
from deep_vision.eval.place_eval import (
    LoopScores,
    OrbVladMatcher,
    PlaceEvalSettings,
    SadMatcher,
    VerifiedMatcher,
    VprScores,
    precision_recall,
    recall_at_full_precision,
    recall_at_n,
    run_scaling,
    run_vpr,
    target_lines,
    update_card,
)
from deep_vision.io.vpr import (
    CORRIDOR_EVAL_PLACES,
    CORRIDOR_TRAIN_PLACES,
    NORDLAND_EVAL_PLACES,
    load_corridor,
    load_nordland,
)

# The shipped PlaceNet on held-out Nordland (bench/results/place-*.md): Recall@1 and its lead over SAD in the
# same run (measured 63.2 % and +34.5 points on 2026-11-22, session 17). With spatial re-ranking of the top 5
# (homography score): Nordland 68.7 %, Corridor places 0-55 75.0 % (56 queries; the global descriptor 62.5 %,
# SAD 44.6 %; bench/results/2026-11-22-place-corridor-split.md).
NORDLAND_MIN_R1 = 0.50
NORDLAND_MIN_GAIN = 0.20  # the target
NORDLAND_RERANKED_MIN_R1 = 0.66
CORRIDOR_RERANKED_MIN_R1 = 0.70


def test_recall_at_n():
    ranked = np.array([[3, 1, 2], [0, 2, 1], [2, 0, 1]])
    positives = [np.array([3]), np.array([1]), np.array([7])]
    assert recall_at_n(ranked, positives, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3),
                                                         3: pytest.approx(2 / 3)}


def test_precision_recall_and_recall_at_full_precision():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, False, True, False]
    p, r, t = precision_recall(scores, correct, n_loops=4)
    assert np.allclose(p, [1, 1, 2 / 3, 3 / 4, 3 / 5]) and np.allclose(r, [0.25, 0.5, 0.5, 0.75, 0.75])
    assert list(t) == scores
    assert recall_at_full_precision(p, r) == 0.5
    assert recall_at_full_precision(*precision_recall([0.9], [False], 3)[:2]) == 0.0
    s = LoopScores(loops=2, queries=3, raw=[(0.9, True), (0.5, False)], verified=[(0.9, True)])
    summary = s.summary()
    assert summary["with_verification"]["recall_at_100_precision"] == 0.5
    assert summary["without_verification"]["precision_all"] == 0.5


def test_vpr_readers_and_split(shared_data):
    corridor = load_corridor(shared_data / "vpr_corridor", (0, 10**6))
    assert len(corridor.queries) == len(corridor.references) == 111 and corridor.name == "corridor"
    assert list(corridor.positives[0]) == [0, 1, 2] and list(corridor.positives[50]) == [48, 49, 50, 51, 52]
    # The evaluation part (the default) and the training part: disjoint, 5 places apart, so no query of one has a
    # positive (within 2 places) in the other; positives beyond the part are dropped (clipped, as at the ends).
    held_out = load_corridor(shared_data / "vpr_corridor")
    assert held_out.query_places == held_out.reference_places == list(range(*CORRIDOR_EVAL_PLACES))
    assert list(held_out.positives[-1]) == [53, 54, 55] and list(held_out.positives[10]) == [8, 9, 10, 11, 12]
    assert [q.name for q in held_out.queries] == [q.name for q in corridor.queries[:56]]
    train_part = load_corridor(shared_data / "vpr_corridor", CORRIDOR_TRAIN_PLACES)
    assert train_part.query_places[0] == CORRIDOR_TRAIN_PLACES[0] == CORRIDOR_EVAL_PLACES[1] + 5
    assert len(train_part.queries) == 50 and list(train_part.positives[0]) == [0, 1, 2]  # places 61, 62, 63
    nordland = load_nordland(shared_data / "vpr_nordland")
    assert max(nordland.reference_places) < NORDLAND_EVAL_PLACES[1] and min(nordland.reference_places) >= 17
    # Ground truth: the same file name in both seasons.
    for q, pos in zip(nordland.queries[:50], nordland.positives[:50]):
        assert nordland.references[int(pos[0])].name == q.name
    excluded = (shared_data / "vpr_nordland" / "DERIVED_dark_or_blank_frames.csv").read_text()
    assert not any(p.name in excluded for p in nordland.references)
    train = load_nordland(shared_data / "vpr_nordland", (900, 10**6))
    assert min(train.query_places) >= 900 and not set(train.reference_places) & set(nordland.reference_places)
    # The last 15 winter frames (the train standing still) are not queries.
    n = len(list((shared_data / "vpr_nordland" / "winter").glob("*.png")))
    assert max(train.query_places) < n - 15 <= max(train.reference_places)


def test_classical_baselines_on_corridor(shared_data):
    """Patch-normalised SAD reproduces the R@1 of 0.432 documented in vpr_corridor/GT.md (the whole folder)."""
    bench = load_corridor(shared_data / "vpr_corridor", (0, 10**6))
    verified = VerifiedMatcher(SadMatcher((64, 48)))
    scores = run_vpr(bench, [SadMatcher((64, 48)), OrbVladMatcher(), verified])
    sad = scores[SadMatcher.name]
    assert sad.recall[1] == pytest.approx(0.432, abs=0.01)
    assert sad.recall[1] <= sad.recall[5] <= sad.recall[10]
    assert 0.2 < scores[OrbVladMatcher.name].recall[1] < 0.7 and sad.query_ms_p50 < 50
    # ORB + RANSAC re-ranking re-orders SAD's top 10: R@1 up (46.8 % measured), R@10 unchanged.
    two = scores[verified.name]
    assert two.two_stage and not two.learned
    assert two.recall[1] > sad.recall[1] and two.recall[10] == sad.recall[10]


def _shipped_and_sad_recall(bench) -> tuple[dict, dict, dict]:
    """Recall@N of models/place.onnx (alone, then with spatial re-ranking) and of the SAD thumbnail, in one run."""
    from deep_vision.estimators import PlaceRecognizer
    from deep_vision.eval.place_eval import (
        NetworkMatcher,
        RerankedNetworkMatcher,
        sad_size_for,
    )
    from deep_vision.io.vpr import read_image

    recognizer = PlaceRecognizer.from_model(REPO / "models" / "place.onnx", backend="onnxruntime:cpu")
    sad = SadMatcher(sad_size_for(read_image(bench.references[0]).shape))
    reranked = RerankedNetworkMatcher(recognizer)
    scores = run_vpr(bench, [sad, NetworkMatcher(recognizer), reranked])
    assert scores[reranked.name].learned and scores[reranked.name].two_stage
    return scores["PlaceNet (ours)"].recall, scores[reranked.name].recall, scores[SadMatcher.name].recall


def test_shipped_placenet_beats_sad_on_held_out_nordland(shared_data):
    """models/place.onnx on Nordland places 0-899 (never trained on): winter queries, summer references."""
    ours, reranked, classical = _shipped_and_sad_recall(load_nordland(shared_data / "vpr_nordland",
                                                                      NORDLAND_EVAL_PLACES))
    assert ours[1] >= NORDLAND_MIN_R1, ours
    assert ours[1] >= classical[1] + NORDLAND_MIN_GAIN, (ours, classical)
    assert ours[5] > classical[5] and ours[10] > classical[10]
    assert reranked[1] >= NORDLAND_RERANKED_MIN_R1 and reranked[10] == ours[10], (reranked, ours)


def test_shipped_placenet_beats_sad_on_held_out_corridor(shared_data):
    """models/place.onnx on Corridor's evaluation part (places 0-55; indoor, fisheye, colour; places from 61 are
    trained on): better than the patch-normalised SAD thumbnail at R@1 and R@5 (R@10 is 100 % for SAD among 56
    references); spatial re-ranking of its top 5 lifts R@1 (75.0 %: the issue's +20 points over the best
    classical method, re-ranked SAD at 51.8 %, are met by 3.2)."""
    ours, reranked, classical = _shipped_and_sad_recall(load_corridor(shared_data / "vpr_corridor"))
    assert ours[1] > classical[1] and ours[5] > classical[5], (ours, classical)
    assert reranked[1] >= CORRIDOR_RERANKED_MIN_R1 and reranked[1] > ours[1] and reranked[10] == ours[10], \
        (reranked, ours)


def _scores(r1: float, learned: bool, two_stage: bool) -> VprScores:
    return VprScores({1: r1, 5: r1, 10: r1}, 1.0, 1.0, 10, 10, learned, two_stage)


def test_target_compares_stage_for_stage_and_the_card_keeps_both_rows(tmp_path):
    scores = {"PlaceNet (ours)": _scores(0.50, True, False), "PlaceNet + re-ranking (ours)": _scores(0.63, True, True),
              "SAD": _scores(0.43, False, False), "SAD + ORB": _scores(0.47, False, True)}
    lines = target_lines(scores)
    assert "+7.0 points (the global descriptor against the single-stage baselines" in lines[1]
    assert "+16.0 points (two stages" in lines[2]  # against re-ranked SAD, the best classical
    assert len(target_lines({"SAD": _scores(0.43, False, False)})) == 0
    (tmp_path / "place.yaml").write_text((REPO / "models" / "place.yaml").read_text())
    report = tmp_path / "place-x.json"
    report.write_text(json.dumps({"vpr": {"corridor: notes": {k: v.to_dict() for k, v in scores.items()}},
                                  "loop_closure": {}, "header": {}}))
    from deep_vision.inference.modelcard import ModelCard

    metrics = ModelCard.load(update_card(tmp_path / "place.onnx", report)).metrics
    assert metrics["held_out_corridor_recall"]["R@1"] == 0.5
    assert metrics["held_out_corridor_reranked_recall"]["R@1"] == 0.63
    assert metrics["held_out_corridor_baselines_recall_at_1"] == {"SAD": 0.43, "SAD + ORB": 0.47}
    assert metrics["report"] == "place-x.md"


def test_scaling_exact_and_hnsw():
    rows = run_scaling([500, 2000], dim=32, queries=20)
    assert [r["size"] for r in rows] == [500, 2000]
    for r in rows:
        assert r["exact"]["index"] == "exact" and r["hnsw"]["index"] == "hnsw"
        assert r["hnsw"]["top1_agrees_with_exact"] > 0.9 and r["exact"]["query_ms_p50"] > 0


def test_report_and_cli(tmp_path, shared_data, monkeypatch, capsys):
    from deep_vision.cli.main import main

    # A 12-place corridor-format folder (links to the real images) keeps the run short.
    data = tmp_path / "data"
    src = shared_data / "vpr_corridor"
    for sub in ("query", "ref"):
        (data / "vpr_corridor" / sub).mkdir(parents=True)
        for i in range(12):
            (data / "vpr_corridor" / sub / f"{i:07d}.jpg").symlink_to(src / sub / f"{i:07d}.jpg")
    rows = [f"{i},query/{i:07d}.jpg," + " ".join(str(j) for j in range(max(0, i - 2), min(11, i + 2) + 1))
            for i in range(12)]
    (data / "vpr_corridor" / "DERIVED_ground_truth.csv").write_text("query_index,query_file,refs\n" +
                                                                   "\n".join(rows) + "\n")
    tiny = PlaceEvalSettings(routes=(), sizes=(500,), scaling_queries=10)
    monkeypatch.setattr(place_eval, "QUICK", tiny)
    assert main(["evaluate", "place", "--model", "none", "--data", str(data), "--out", str(tmp_path / "out"),
                 "--quick"]) == 0
    md = next((tmp_path / "out").glob("place-*.md"))
    text = md.read_text()
    assert "## (a) VPR benchmarks" in text and "corridor" in text and "## (c)" in text
    report = json.loads(md.with_suffix(".json").read_text())
    assert report["vpr"] and report["scaling"][0]["size"] == 500
    assert "report:" in capsys.readouterr().out
    # The PR-curve plot of (b).
    curves = {"SAD": LoopScores(loops=3, raw=[(0.9, True), (0.2, False)], verified=[(0.9, True)]).curves()}
    png = place_eval.pr_png(curves, tmp_path / "pr.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", "nothing"]) == 2


@pytest.mark.parametrize("channels", [1, 3])
def test_loop_routes_in_colour_for_an_rgb_network(tmp_path, monkeypatch, channels):
    """(b) renders the routes in colour when the network takes RGB (the SAD baseline converts them to grey) and
    says so in the report; a grey network gets grey routes."""
    import torch
    from deep_vision.estimators import PlaceRecognizer
    from deep_vision.models.place_net import PlaceNet

    net = PlaceNet({"preset": "gem", "image_size": [64, 32], "channels": [8, 16], "strides": [2, 2], "dim": 8,
                    "in_channels": channels})
    torch.save({"model": net.state_dict(), "conf": net.conf}, tmp_path / "net.pt")
    seen = []

    def record(sequence, recognizer, scores, *, images, **kwargs):
        norm = float(np.linalg.norm(recognizer.describe(images[0])))
        seen.append((recognizer.descriptor, images[0].ndim, round(norm, 4)))

    monkeypatch.setattr(place_eval, "run_route", record)
    settings = PlaceEvalSettings(vpr=False, routes=(9001,), route_frames=4, route_size=(64, 32), sizes=())
    md = place_eval.evaluate(PlaceRecognizer.from_model(tmp_path / "net.pt", backend="torch"), tmp_path / "none",
                             tmp_path / "out", settings)
    ndim = 2 if channels == 1 else 3
    assert seen == [("network", ndim, 1.0), ("sad", ndim, 1.0)]  # both describe the frames they are given
    assert ("in colour (SAD: their grey)" in md.read_text()) == (channels == 3)
