"""training/train_place.py: a tiny end-to-end run (render, init, mining, InfoNCE steps, validation, checkpoint),
resuming it, the NetVLAD head with the triplet loss, the losses and batch negatives, query weights, the
positive/negative rules, and the refusal to train on evaluation data."""

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
    assert saved["resolved_model_conf"]["head"] == "gem" and saved["loss"]["name"] == "infonce"
    assert "synthetic(" in saved["training_data_summary"]
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


def test_netvlad_head_with_triplet_loss(tmp_path):
    """The paper's head (k-means centres, PCA-whitened projection) and loss still train end to end."""
    config = str(REPO / "training/configs/place.yaml")
    args = [*overrides(tmp_path, 2), "model.preset=compact", "loss.name=triplet", "init.whiten=true"]
    assert train_place.main(["--config", config, *args]) == 0
    final = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    assert final["conf"]["head"] == "netvlad" and final["step"] == 2


def _tuples_set():
    """Four images of two places in group g (two traversals) and one image of group h."""
    s = train_place.PlaceSet()
    s.source_names.append("x")
    r = {"pos_r": 5.0, "neg_r": 25.0, "gap_s": 10.0}
    s.add("a0", group="g", pos=[0, 0, 0], traversal=0, **r)
    s.add("a1", group="g", pos=[1, 0, 0], traversal=1, **r)
    s.add("b0", group="g", pos=[100, 0, 0], traversal=0, **r)
    s.add("b1", group="g", pos=[100, 0, 0], traversal=1, **r)
    s.add("h", group="h", pos=[0, 0, 0], traversal=0, **r)
    s.freeze()
    return s


def test_batch_negatives_follow_the_relations():
    s = _tuples_set()
    tuples = [(0, 1, [2]), (2, 3, [4])]  # batch order: a0 a1 b0 | b0 b1 h
    neg = train_place.batch_negatives(s, tuples)
    assert neg.shape == (2, 6)
    # a0: b0, b0 (other tuple), b1, h are negatives; itself and its positive a1 are not.
    assert list(neg[0]) == [False, False, True, True, True, True]
    # b0: a0, a1 and h are negatives; b0 itself (twice) and b1 are not.
    assert list(neg[1]) == [True, True, False, False, False, True]


def test_infonce_loss():
    lcfg = {"name": "infonce", "temperature": 0.1}
    s = _tuples_set()
    tuples = [(0, 1, [2]), (2, 3, [4])]
    neg = train_place.batch_negatives(s, tuples)
    # Collapse (every descriptor equal) costs log(1 + number of negatives): no trivial minimum.
    same = torch.nn.functional.normalize(torch.ones(6, 8), dim=1)
    loss, _ = train_place.place_loss(same, 1, lcfg, neg)
    expected = np.mean([np.log(1 + neg[0].sum()), np.log(1 + neg[1].sum())])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Places apart (a* on one axis, b* on another, h on a third): near zero, and the stats say so.
    e = torch.eye(8)
    apart = torch.stack([e[0], e[0], e[1], e[1], e[1], e[2]])
    loss, stats = train_place.place_loss(apart, 1, lcfg, neg)
    assert float(loss) < 1e-3 and stats["active"] == 0.0
    # The positive must beat every batch negative, not only the query's mined one: a1 close to a0 but b1
    # (another tuple's image) closer still makes the loss large.
    close = torch.stack([e[0], (e[0] + e[3]), e[1], e[1], e[0], e[2]])
    close = torch.nn.functional.normalize(close, dim=1)
    loss, stats = train_place.place_loss(close, 1, lcfg, neg)
    assert float(loss) > 1.0 and stats["active"] > 0
    with pytest.raises(ValueError, match="negative mask"):
        train_place.place_loss(apart, 1, lcfg)


def test_source_weights_steer_the_queries():
    s = train_place.PlaceSet()
    for name, group, w in (("x", "g", 1.0), ("y", "h", 9.0)):
        s.source_names.append(name)
        for t in range(2):
            for k in range(20):
                s.add(f"{group}{t}{k}", group=group, pos=[100.0 * k, 0, 0], traversal=t, pos_r=5.0, neg_r=25.0,
                      gap_s=10.0, weight=w)
    s.freeze()
    miner = train_place.Miner(s, {"cache_size": 1000, "negatives": 2, "hard_pool": 5})
    miner.cache_idx = np.arange(len(s))
    miner.desc = np.random.default_rng(0).normal(size=(len(s), 4)).astype(np.float32)
    miner.positive, miner.negative = s.relations(miner.cache_idx, miner.cache_idx)
    miner.eligible = np.flatnonzero(miner.positive.any(axis=1) & miner.negative.any(axis=1))
    queries = [q for q, _, _ in miner.triplets(2000, np.random.default_rng(1))]
    share_y = np.mean(s.source[queries] == 1)
    assert 0.87 < share_y < 0.93


def test_small_sources_are_cached_whole(monkeypatch):
    """mining.cache_whole_below: a small source keeps every image (and so every pair) in each refresh; the
    rest of the cache is drawn from the large sources; without the key the whole cache is a random draw."""
    s = train_place.PlaceSet()
    for name, group, n in (("big", "g", 400), ("small", "h", 30)):
        s.source_names.append(name)
        for k in range(n):
            s.add(f"{group}{k}", group=group, pos=[10.0 * (k // 2), 0, 0], traversal=k % 2, pos_r=5.0, neg_r=25.0,
                  gap_s=10.0)
    s.freeze()

    desc = np.random.default_rng(0).normal(size=(len(s), 4)).astype(np.float32)
    # The descriptors do not matter here: stand in for describe_distributed.
    monkeypatch.setattr(train_place, "describe_distributed", lambda model, store, idx, device, info: desc[idx])

    def refresh(mcfg, seed):
        miner = train_place.Miner(s, mcfg)
        miner.refresh(None, None, "cpu", None, np.random.default_rng(seed))
        return miner

    whole = refresh({"cache_size": 100, "cache_whole_below": 50}, 0)
    small = whole.cache_idx[s.source[whole.cache_idx] == 1]
    assert len(whole.cache_idx) == 100 and len(small) == 30
    assert np.isin(np.flatnonzero(s.source == 1), whole.cache_idx[whole.eligible]).all()  # each with its pair
    drawn = [np.sum(s.source[refresh({"cache_size": 100}, seed).cache_idx] == 1) for seed in range(5)]
    assert max(drawn) < 30  # a random draw keeps ~7 of them


def test_per_source_augment_override():
    """build_set keeps each entry's own ``augment`` mapping (main merges it over data.augment for that source's
    images); keys data.augment does not have are refused."""
    entries = [{"type": "nordland", "root": str(REPO.parent / "shared/data/vpr_nordland"), "first": 900,
                "last": 905, "augment": {"fisheye_prob": 0.0}},
               {"type": "nordland", "root": str(REPO.parent / "shared/data/vpr_nordland"), "first": 906,
                "last": 910}]
    if not (REPO.parent / "shared/data/vpr_nordland").is_dir():
        pytest.skip("../shared/data/vpr_nordland is absent (Nordland thumbnails)")
    dcfg = {"pos_radius_m": 5.0, "neg_radius_m": 25.0, "min_gap_s": 10.0,
            "augment": {"crop_min": 0.9, "fisheye_prob": 0.5}}
    s = train_place.build_set(entries, dcfg, True, "data.train")
    assert s.source_augment == [{"fisheye_prob": 0.0}, {}]
    with pytest.raises(ValueError, match="not keys of data.augment"):
        train_place.build_set([{**entries[0], "augment": {"fisheye": 0.0}}], dcfg, True, "data.train")


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
    ("{type: vpr_csv, root: ../shared/data/vpr_corridor}", "Corridor places below 61"),
    ("{type: vpr_csv, root: ../shared/data/vpr_corridor, first: 58, last: 110}", "Corridor places below 61"),
])
def test_refuses_evaluation_data(tmp_path, entry, message):
    args = ["--config", str(REPO / "training/configs/place.yaml"), f"data.train=[{entry}]", "data.val=[]",
            f"out={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match=message):
        train_place.main(args)


def test_saturation_augmentation():
    """``saturation`` scales each RGB frame's colour about its grey (luma) by a factor in [1 - s, 1 + s]: the
    grey and a grey frame stay as they are; grey frames ignore it."""
    off = {"crop_min": 1.0, "brightness": 0.0, "contrast": 0.0, "gamma": 0.0, "colour": 0.0, "haze_prob": 0.0,
           "blur_prob": 0.0, "noise": 0.0}
    rng = np.random.default_rng(0)
    image = np.zeros((16, 32, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 60, 140, 120  # teal
    luma = image.astype(np.float64) @ [0.299, 0.587, 0.114]
    factors = []
    for _ in range(20):
        out = train_place.augment(image, rng, {**off, "saturation": 0.4}).astype(np.float64)
        assert np.abs(out @ [0.299, 0.587, 0.114] - luma).max() <= 1.0
        factors.append((out[0, 0, 1] - out[0, 0, 0]) / 80.0)  # green minus red, 80 before
        assert np.all(out == out[0, 0])
    assert 0.6 - 0.02 <= min(factors) < 0.85 and 1.15 < max(factors) <= 1.4 + 0.02
    grey = np.full((16, 32, 3), 77, np.uint8)
    assert np.array_equal(train_place.augment(grey, rng, {**off, "saturation": 0.4}), grey)
    mono = np.full((16, 32), 77, np.uint8)
    assert np.array_equal(train_place.augment(mono, rng, {**off, "saturation": 0.4}), mono)


def test_fisheye_augmentation():
    """The fisheye look keeps the frame's size and its centre, keeps a line near the centre near it (radii
    change by the lens and the image circle's width), and is black outside the image circle."""
    rng = np.random.default_rng(0)
    x = np.full((80, 160), 200.0, np.float32)
    x[:, 92] = 0.0  # a dark vertical line right of the centre
    for _ in range(5):
        out = train_place.fisheye(x, rng)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out[0, 0] == 0 and out[-1, -1] == 0  # corners outside the circle
        assert abs(out[40, 80] - 200.0) < 1.0  # centre kept
        dark = np.flatnonzero(out[40, 80:] < 100) + 80
        assert dark.size and 84 < dark[0] < 130  # the line
    rgb = train_place.fisheye(np.dstack([x] * 3), rng)
    assert rgb.shape == (80, 160, 3)


def test_freeze_modules_keeps_a_backbone_as_trained():
    """train.freeze: the frozen submodule's weights and BatchNorm statistics stay as they were through training
    steps (model.train() leaves it in eval mode, DDP's train() included), the rest learns; unknown names are
    refused."""
    from deep_vision.models.place_net import PlaceNet

    from training.common import freeze_modules

    torch.manual_seed(0)
    model = PlaceNet({"preset": "gem", "image_size": [64, 32], "channels": [8, 16], "strides": [2, 2], "dim": 8})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert freeze_modules(model, ["backbone"]) == sum(p.numel() for p in model.backbone.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert model.training and model.projection.training and not model.backbone.training
    for _ in range(3):
        loss = model(torch.rand(4, 1, 32, 64)).sum(dim=0).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["projection.weight"], after["projection.weight"])
    model.eval()
    model.train()
    assert not model.backbone.training
    with pytest.raises(ValueError, match="no submodule"):
        freeze_modules(model, ["backbone", "head"])


def test_config_base_merges_and_appends(tmp_path):
    """``base:`` starts a config from another: mappings merge key by key, ``name+:`` appends to a list, other
    values replace; overrides apply last; a loop in the chain is an error."""
    from training.common import load_config

    (tmp_path / "a.yaml").write_text("data: {train: [{type: x}], pos: 5}\noptim: {lr: 1, warmup: 10}\nout: a\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\ndata: {{train+: [{{type: y}}]}}\n"
                                     "optim: {lr: 2}\nout: b\n")
    cfg = load_config(tmp_path / "b.yaml", ["data.pos=7"])
    assert cfg == {"data": {"train": [{"type": "x"}, {"type": "y"}], "pos": 7}, "optim": {"lr": 2, "warmup": 10},
                   "out": "b"}
    (tmp_path / "c.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\noptim+: [1]\n")
    with pytest.raises(ValueError, match="appends a list"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text(f"base: {tmp_path / 'd.yaml'}\n")
    with pytest.raises(ValueError, match="loops"):
        load_config(tmp_path / "d.yaml")
    # The shipped stage-4 config: the grid stage's data plus Corridor's training part.
    stage4 = load_config(REPO / "training/configs/place_corridor_split.yaml")
    grid = load_config(REPO / "training/configs/place_street_indoor_grid.yaml")
    assert stage4["data"]["train"][:-1] == grid["data"]["train"] and stage4["data"]["val"] == grid["data"]["val"]
    assert stage4["data"]["train"][-1]["first"] == 61 and "base" not in stage4
