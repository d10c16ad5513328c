"""HomographyNet: presets, shapes, conf checking, size limit, trainability on a tiny problem."""

from __future__ import annotations

import pytest
import torch

from deep_vision.errors import ConfigError
from deep_vision.models.homography_net import HomographyNet, parameter_count


def test_paper_preset_matches_the_paper():
    net = HomographyNet({"preset": "paper"})
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 64, 64, 128, 128, 128, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.features) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.features) == 8
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [1024, 8]
    assert linears[0].in_features == 128 * 16 * 16


@pytest.mark.parametrize("preset", ["compact", "corr"])
def test_small_presets_fit_the_model_size_limit(preset):
    net = HomographyNet({"preset": preset})
    assert parameter_count(net) * 4 < 15e6
    assert parameter_count(HomographyNet({"preset": "paper"})) * 4 > 15e6


@pytest.mark.parametrize("preset", ["paper", "compact", "corr"])
def test_forward_shape(preset):
    net = HomographyNet({"preset": preset}).eval()
    out = net(torch.zeros(3, 2, 128, 128))
    assert out.shape == (3, 4, 2)


def test_corr_preset_correlates_every_source_cell_with_every_target_cell():
    torch.manual_seed(0)
    net = HomographyNet({"preset": "corr", "channels": [8, 8, 16, 16, 16, 16, 32, 32]}).eval()
    patch = torch.rand(1, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        corr = net.correlate(torch.cat([patch, patch], 1))
    assert corr.shape == (1, 256, 16, 16)  # 16x16 target cells as channels, at 16x16 source cells
    assert torch.allclose(corr.norm(dim=1), torch.ones(1, 16, 16), atol=1e-5)
    # Identical patches: each source cell is most similar to the same target cell (index y * 16 + x).
    best = corr[0].argmax(dim=0)
    assert (best == torch.arange(256).view(16, 16)).float().mean() > 0.9


def test_conf_errors():
    with pytest.raises(ConfigError, match="unknown conf key"):
        HomographyNet({"chanels": [1]})
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        HomographyNet({"preset": "huge"})
    with pytest.raises(ValueError, match=r"\[B x 2 x S x S\]"):
        HomographyNet()(torch.zeros(1, 3, 128, 128))


@pytest.mark.parametrize("preset", ["compact", "corr"])
def test_learns_a_translation_quickly(preset):
    """A few dozen steps on translated copies of one texture reduce the corner error clearly."""
    torch.manual_seed(0)
    net = HomographyNet({"preset": preset, "patch_size": 64, "dropout": 0.0, "fc_dim": 64,
                         "channels": [8, 8, 16, 16, 16, 16, 32, 32],
                         **({"head_channels": [32, 32, 16]} if preset == "corr" else {})})
    base = torch.rand(1, 1, 96, 96)
    base = torch.nn.functional.avg_pool2d(base, 5, 1, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def batch(n=16):
        shifts = torch.randint(-8, 9, (n, 2))
        prev = base[..., 16:80, 16:80].expand(n, 1, 64, 64)
        curr = torch.stack([base[0, :, 16 - int(dy):80 - int(dy), 16 - int(dx):80 - int(dx)] for dx, dy in shifts])
        x = torch.cat([prev, curr], 1) * 2 - 1
        y = shifts.float()[:, None, :].expand(n, 4, 2)
        return x, y

    x_val, y_val = batch(32)
    with torch.no_grad():
        before = (net.eval()(x_val) - y_val).norm(dim=-1).mean()
    net.train()
    for _ in range(120):
        x, y = batch()
        loss = ((net(x) - y) / 32).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (net.eval()(x_val) - y_val).norm(dim=-1).mean()
    assert after < 0.6 * before, (before, after)
