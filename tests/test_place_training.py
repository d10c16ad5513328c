"""training/train_place.py: a tiny end-to-end run (render, k-means/PCA init, mining, triplet steps, validation,
checkpoint), resuming it, the positive/negative rules, and the refusal to train on evaluation data."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO))

from training import train_place  # noqa: E402

WORLD = ("world: {route: {corners: [[0,0],[40,0],[40,25],[0,25]], corner_radius_m: 8.0}, "
         "scene: {ground_texel_m: 0.1, facade_texel_m: 0.1, margin_m: 20.0}}")


def overrides(tmp, steps):
    synth = f"cache: {tmp / 'synth'}, frames: 130, size: [128, 48], min_gap_s: 6.0, {WORLD}"
    return [
        f"data.train=[{{type: synthetic, seeds: [1, 2], {synth}}}]",
        f"data.val=[{{type: synthetic, name: val, seeds: [8001], {synth}}}]",
        "data.store_size=[72, 36]", "model.image_size=[64, 32]", "model.channels=[8, 16, 16, 32]",
        "model.strides=[2, 2, 2, 1]", "model.clusters=4", "model.dim=16",
        "mining.cache_size=150", "mining.refresh_every=3", "mining.negatives=2", "mining.hard_pool=8",
        "init.images=40", f"train.steps={steps}", "train.batch_size=3", "train.log_every=2", "train.val_every=4",
        "train.val_max_images=200", "train.threads=1", f"out={tmp / 'run'}",
    ]


def test_smoke_run_and_resume(tmp_path):
    config = str(REPO / "training/configs/place.yaml")
    assert train_place.main(["--config", config, *overrides(tmp_path, 4)]) == 0
    run = tmp_path / "run"
    final = torch.load(run / "final.pt", weights_only=True)
    assert final["step"] == 4 and final["conf"]["dim"] == 16 and "val_r1" in final["val"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["resolved_model_conf"]["head"] == "netvlad" and "synthetic(" in saved["training_data_summary"]
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,time,loss,active") and "val_r1" in lines[0]
    # Resume: continues from step 4 to 6 instead of starting over.
    assert train_place.main(["--config", config, *overrides(tmp_path, 6)]) == 0
    assert torch.load(run / "final.pt", weights_only=True)["step"] == 6
    assert (run / "checkpoints" / "step_0000006.pt").is_file()
    # The trained checkpoint runs in the recognizer (torch backend, conf from the checkpoint).
    from deep_vision.estimators import PlaceRecognizer

    rec = PlaceRecognizer.from_model(run / "final.pt", backend="torch:cpu")
    assert rec.describe(np.zeros((48, 128), np.uint8)).shape == (16,)


def test_positive_and_negative_rules():
    s = train_place.PlaceSet()
    s.source_names.append("x")
    r = {"pos_r": 5.0, "neg_r": 25.0, "gap_s": 10.0}
    s.add("a", group="g", pos=[0, 0, 0], heading=0.0, traversal=0, time_s=0.0, **r)
    s.add("b", group="g", pos=[1, 0, 0], heading=0.0, traversal=0, time_s=1.0, **r)  # too soon: not positive
    s.add("c", group="g", pos=[2, 0, 0], heading=0.1, traversal=1, time_s=60.0, **r)  # another lap: positive
    s.add("d", group="g", pos=[2, 0, 0], heading=np.pi, traversal=1, time_s=61.0, **r)  # facing away
    s.add("e", group="g", pos=[50, 0, 0], traversal=1, time_s=70.0, **r)  # far: negative
    s.add("f", group="h", pos=[0, 0, 0], traversal=0, time_s=0.0, **r)  # other group: negative
    s.freeze()
    pos, neg = s.relations(np.array([0]), np.arange(6))
    assert list(pos[0]) == [False, False, True, False, False, False]
    assert list(neg[0]) == [False, False, False, False, True, True]


@pytest.mark.parametrize("entry, message", [
    ("{type: synthetic, seeds: [9001], frames: 10, size: [64, 32]}", "reserved for evaluation"),
    ("{type: nordland, root: ../shared/data/vpr_nordland, first: 100, last: 200}", "evaluation part"),
    ("{type: vpr_csv, root: ../shared/data/vpr_corridor}", "held-out Corridor"),
])
def test_refuses_evaluation_data(tmp_path, entry, message):
    args = ["--config", str(REPO / "training/configs/place.yaml"), f"data.train=[{entry}]", "data.val=[]",
            f"out={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match=message):
        train_place.main(args)
