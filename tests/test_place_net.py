"""PlaceNet: presets, shapes, unit-norm output, grey/RGB, conf checking, NetVLAD/PCA initialisation, ONNX export,
and PlaceRecognizer on top of it (network and the classical thumbnail descriptor)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deep_vision.errors import ConfigError, ImageEncodingError
from deep_vision.models import build_model
from deep_vision.models.place_net import PlaceNet, parameter_count, preprocess

SMALL = {"image_size": [64, 32], "channels": [8, 16, 16, 32], "strides": [2, 2, 2, 1], "clusters": 8, "dim": 16}


def test_compact_preset_is_netvlad_and_fits_the_size_limit():
    net = PlaceNet({"preset": "compact"})
    assert net.conf["head"] == "netvlad" and net.conf["clusters"] == 32 and net.out_dim == 256
    assert parameter_count(net) * 4 < 15e6
    gem = PlaceNet({"preset": "gem"})
    assert gem.conf["head"] == "gem" and gem.out_dim == 256
    assert build_model("place_net", {"preset": "gem"}).conf["head"] == "gem"


@pytest.mark.parametrize("conf", [{**SMALL}, {**SMALL, "preset": "gem"}, {**SMALL, "in_channels": 3},
                                  {**SMALL, "dim": 0}, {**SMALL, "preset": "gem", "gem_grid": [1, 2], "dim": 0},
                                  {**SMALL, "preset": "gem", "gem_grid": [1, 2]}])
def test_forward_gives_unit_descriptors(conf):
    net = PlaceNet(conf).eval()
    x = torch.rand(3, net.conf["in_channels"], 32, 64) * 2 - 1
    with torch.no_grad():
        d = net(x)
    cells = sum(g * g for g in conf.get("gem_grid", [1]))
    expected = conf["dim"] or (8 * 32 if net.conf["head"] == "netvlad" else 32 * cells)
    assert d.shape == (3, expected) and net.out_dim == expected
    assert torch.allclose(d.norm(dim=1), torch.ones(3), atol=1e-5)


def test_conf_errors():
    with pytest.raises(ConfigError, match="unknown conf key"):
        PlaceNet({"clusterz": 4})
    with pytest.raises(ConfigError, match="unknown preset"):
        PlaceNet({"preset": "vgg"})
    with pytest.raises(ConfigError, match="in_channels"):
        PlaceNet({"in_channels": 2})
    with pytest.raises(ConfigError, match="same, non-zero number"):
        PlaceNet({"channels": [8, 8], "strides": [2]})
    with pytest.raises(ValueError, match=r"\[B x 1 x H x W\]"):
        PlaceNet(SMALL)(torch.zeros(1, 3, 32, 64))
    with pytest.raises(ConfigError, match=r"gem_grid \[3\] does not divide the 8x4 feature map"):
        PlaceNet({**SMALL, "preset": "gem", "gem_grid": [1, 3]})
    with pytest.raises(ConfigError, match="gem_grid needs head gem"):
        PlaceNet({**SMALL, "gem_grid": [1, 2]})
    with pytest.raises(ConfigError, match="grid sizes >= 1"):
        PlaceNet({**SMALL, "preset": "gem", "gem_grid": [0]})


def test_gem_grid_keeps_the_layout_and_starts_from_a_global_model():
    """Global GeM cannot tell a view from its halves swapped; the grid can. A global model's weights seed a grid
    model: without images its descriptor is the old projection of the mean of the cell vectors; with images, the
    PCA of the cells' old descriptors, which keeps their distances."""
    torch.manual_seed(0)
    conf = {**SMALL, "preset": "gem"}
    old, new = PlaceNet(conf).eval(), PlaceNet({**conf, "gem_grid": [1, 2]}).eval()
    feats = torch.rand(2, 32, 4, 8)
    swapped = torch.cat([feats[..., 4:], feats[..., :4]], dim=3)  # left and right halves exchanged
    with torch.no_grad():
        assert torch.allclose(old.pool(feats), old.pool(swapped), atol=1e-6)
        assert not torch.allclose(new.pool(feats), new.pool(swapped), atol=1e-3)
        assert new.load_pretrained(old.state_dict()) == "projection [16, 32] tiled over 5 GeM cells"
        cells = new.pool(feats).reshape(2, 5, 32) * 5**0.5  # the whole map, then 4 quadrants, each unit norm
        assert torch.allclose(cells.norm(dim=2), torch.ones(2, 5), atol=1e-5)
        expected = torch.nn.functional.normalize(old.projection(cells.mean(dim=1)), dim=1)
        got = torch.nn.functional.normalize(new.projection(new.pool(feats)), dim=1)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(new.backbone[0].weight, old.backbone[0].weight)
    assert new.load_pretrained(new.state_dict()) == ""  # the same architecture loads as is
    # With training images: the PCA of the cells' old descriptors concatenated. 16 images span at most 15
    # dimensions, so the 16-d PCA keeps every distance between them: the layout survives.
    images = torch.rand(16, 1, 32, 64) * 2 - 1
    grid = PlaceNet({**conf, "gem_grid": [1, 2]}).eval()
    assert grid.load_pretrained(old.state_dict(), images).startswith("projection [16, 32] applied per GeM cell")
    with torch.no_grad():
        pooled = grid.pool(grid.features(images))
        per_cell = old.projection(pooled.reshape(16, 5, 32) * 5**0.5).reshape(16, -1)  # [16 x 80]
        assert torch.allclose(torch.cdist(grid.projection(pooled), grid.projection(pooled)),
                              torch.cdist(per_cell, per_cell), atol=1e-3)
    with pytest.raises(ValueError, match="at least 16 images"):
        PlaceNet({**conf, "gem_grid": [1, 2]}).load_pretrained(old.state_dict(), images[:8])
    with pytest.raises(ConfigError, match="cannot seed"):
        PlaceNet({**conf, "gem_grid": [1, 2], "dim": 8}).load_pretrained(old.state_dict())


def test_rgb_model_starts_as_the_grey_model_it_is_seeded_from():
    """load_pretrained spreads a grey model's first convolution over R, G, B by the luma weights: on a colour
    frame the RGB model's descriptor is the grey model's on the frame's grey conversion (cv2 rounds the grey to
    uint8, hence the tolerance), and on a grey frame (replicated) exactly the grey model's. A grey global model
    seeds an RGB grid model in one call."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    conf = {**SMALL, "preset": "gem"}
    size = conf["image_size"]
    grey, rgb = PlaceNet(conf).eval(), PlaceNet({**conf, "in_channels": 3}).eval()
    assert rgb.load_pretrained(grey.state_dict()) == "grey first convolution spread over RGB by the luma weights"
    assert torch.allclose(rgb.backbone[0].weight.sum(dim=1, keepdim=True), grey.backbone[0].weight, atol=1e-6)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), (0, 0), s) for s in (0.5, 3.0)]
    with torch.no_grad():
        for f in frames:
            want = grey(torch.from_numpy(preprocess(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, 1)))
            assert torch.allclose(rgb(torch.from_numpy(preprocess(f, size, 3))), want, atol=2e-2)
        g = rng.integers(0, 256, (48, 80), dtype=np.uint8)
        assert torch.allclose(rgb(torch.from_numpy(preprocess(g, size, 3))),
                              grey(torch.from_numpy(preprocess(g, size, 1))), atol=1e-5)
    images = torch.rand(16, 3, 32, 64) * 2 - 1
    note = PlaceNet({**conf, "in_channels": 3, "gem_grid": [1, 2]}).load_pretrained(grey.state_dict(), images)
    assert note.startswith("grey first convolution spread over RGB by the luma weights; projection [16, 32] "
                           "applied per GeM cell")


def test_netvlad_init_from_kmeans_and_pca():
    torch.manual_seed(0)
    net = PlaceNet(SMALL).eval()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 32))
    feats = np.concatenate([c + 0.05 * rng.standard_normal((50, 32)) for c in centres])
    alpha = net.init_netvlad(feats)
    assert alpha > 1.0
    c = net.pool.centroids.detach().numpy()
    assert np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    # Every true cluster centre is found (up to order).
    unit = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    assert (unit @ c.T).max(axis=1).min() > 0.99
    # The assignment conv is derived from the centres: w = 2 alpha c.
    assert torch.allclose(net.pool.assign.weight[:, :, 0, 0], 2 * alpha * net.pool.centroids, atol=1e-4)
    pooled = torch.randn(40, 8 * 32)
    net.init_projection_pca(pooled)
    with torch.no_grad():
        projected = net.projection(pooled)
    # Whitened principal components: decorrelated, about unit variance.
    cov = np.cov(projected.numpy().T)
    assert np.allclose(np.diag(cov), 1.0, atol=0.1)
    with pytest.raises(ConfigError, match="gem"):
        PlaceNet({**SMALL, "preset": "gem"}).init_netvlad(feats)


def test_preprocess_grey_rgb_and_sizes():
    grey = np.full((120, 320), 255, np.uint8)
    x = preprocess(grey, (64, 32), 1)
    assert x.shape == (1, 1, 32, 64) and x.dtype == np.float32 and np.allclose(x, 1.0)
    rgb = np.zeros((120, 160, 3), np.uint8)
    assert preprocess(rgb, (64, 32), 1).shape == (1, 1, 32, 64)
    assert preprocess(grey, (64, 32), 3).shape == (1, 3, 32, 64)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(grey.astype(np.float32), (64, 32), 1)


@pytest.mark.parametrize("conf", [SMALL, {**SMALL, "preset": "gem", "gem_grid": [1, 2]},
                                  {**SMALL, "preset": "gem", "gem_grid": [1, 2], "local_features": True}],
                         ids=["netvlad", "gem-grid", "gem-grid-local"])
def test_export_and_recognizer_on_onnx(tmp_path, conf):
    from deep_vision.estimators.place import PlaceRecognizer
    from deep_vision.inference.export import export_onnx

    torch.manual_seed(0)
    net = PlaceNet(conf).eval()
    spec = net.input_spec()
    frames = [np.random.default_rng(i).integers(0, 255, (120, 320), dtype=np.uint8) for i in range(2)]
    card = export_onnx(net, net.example_inputs(), tmp_path / "place.onnx",
                       output_names=[o["name"] for o in spec["outputs"]],
                       real_inputs=net.inputs_from_frames(frames), random_trials=1,
                       card_fields={"inputs": spec["inputs"], "outputs": spec["outputs"], "model_class": "place_net",
                                    "model_config": net.conf})
    assert card.export["tensorrt_operator_check"].startswith("passed")
    rec = PlaceRecognizer.from_model(tmp_path / "place.onnx", backend="onnxruntime:cpu")
    assert rec.dim == 16 and rec.image_size == (64, 32) and rec.in_channels == 1 and not rec.wants_rgb
    d = rec.describe(frames[0])
    with torch.no_grad():
        out = net(torch.from_numpy(preprocess(frames[0], (64, 32), 1)))
    ref = (out[0] if conf.get("local_features") else out)[0].numpy()
    assert d.shape == (16,) and d.dtype == np.float32
    assert abs(np.linalg.norm(d) - 1) < 1e-5 and np.allclose(d, ref, atol=1e-4)
    d2, local = rec.describe_local(frames[0])
    assert np.allclose(d2, d)
    if conf.get("local_features"):
        # The backbone's 8 x 4 map (stride 8) of 32-d cells, unit norm, as PyTorch computes it.
        assert rec.local_name == "local_features" and local.grid == (8, 4) and local.cells.shape == (32, 32)
        assert np.allclose(local.cells, out[1][0].numpy().reshape(32, 32).T, atol=1e-4)
        assert spec["outputs"][1]["shape"] == [1, 32, 4, 8]
    else:
        assert rec.local_name is None and local is None
    assert rec.describe(np.stack([frames[1]] * 3, axis=2)).shape == (16,)  # RGB input
    assert rec.describe_many(frames).shape == (2, 16)
    assert len(rec.model_id) == 64
    with pytest.raises(ImageEncodingError):
        rec.describe(np.zeros((4, 4, 2), np.uint8))


def test_classical_thumbnail_descriptor():
    from deep_vision.estimators.place import PlaceRecognizer, patch_normalize

    rec = PlaceRecognizer.classical("sad", sad_size=(64, 24))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (120, 320), dtype=np.uint8)
    d = rec.describe(a)
    assert d.shape == (64 * 24,) == (rec.dim,) and abs(np.linalg.norm(d) - 1) < 1e-5
    # Patch normalisation makes it invariant to gain and offset.
    brighter = np.clip(a.astype(np.float32) * 0.5 + 60, 0, 255).astype(np.uint8)
    assert float(d @ rec.describe(brighter)) > 0.98
    assert float(d @ rec.describe(rng.integers(0, 255, (120, 320), dtype=np.uint8))) < 0.3
    assert not np.any(rec.describe(np.zeros((120, 320), np.uint8)))  # a blank frame: zero vector
    p = patch_normalize(rng.integers(0, 255, (16, 16), dtype=np.uint8), 8)
    assert abs(p[:8, :8].mean()) < 1e-5 and abs(p[:8, :8].std() - 1) < 1e-3
    with pytest.raises(ConfigError, match="multiple"):
        PlaceRecognizer.classical("sad", sad_size=(60, 24))
    with pytest.raises(ConfigError, match="needs a model"):
        PlaceRecognizer.classical("network")
