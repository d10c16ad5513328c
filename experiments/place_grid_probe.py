"""Diagnosis: does the layout of a place (where things are in the frame) tell the Corridor benchmark's places
apart? Pools one trained global-GeM PlaceNet's backbone features over grid cells, without training, and
measures Corridor Recall@1 (and Nordland 0-899 with ``--nordland``).

Usage: .venv/bin/python experiments/place_grid_probe.py [--model runs/place_street_indoor/final.pt] [--nordland]
(the default: the second training stage, training/configs/place_street_indoor.yaml; the same weights as
models/place.pt from commit 3d726f3 until ad58421)
Writes bench/results/<date>-place-grid-probe.md. Variants:
- global: the model as trained (GeM over the whole feature map);
- cells concat: each cell (whole map + 2x2 quadrants) through the model's own projection, L2-normalised,
  concatenated (1280-d);
- tiled (gem_grid [1, 2]): PlaceNet.load_pretrained without images, the projection of the cells' mean (256-d);
- PCA (gem_grid [1, 2]): PlaceNet.load_pretrained with the 300 training images that train_place draws for
  training/configs/place_street_indoor_grid.yaml (seed 0): the PCA of the cells' descriptors to 256-d, where
  that fine-tune starts.
Corridor and Nordland 0-899 are held out: this probe chose the grid head, so the benchmark has been looked at
(by four untrained variants) before the fine-tune; the fine-tune itself was not tuned on it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deep_vision.eval.place_eval import recall_at_n  # noqa: E402
from deep_vision.io.vpr import load_corridor, load_nordland, read_image  # noqa: E402
from deep_vision.models.place_net import PlaceNet, preprocess  # noqa: E402

from training import train_place  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def batch(images: list[np.ndarray], conf: dict) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([preprocess(im, conf["image_size"], conf["in_channels"])
                                            for im in images]))


@torch.no_grad()
def variants(state: dict, conf: dict) -> dict[str, callable]:
    conf = {**conf, "local_features": False}  # the descriptor alone, also from an exported checkpoint's conf
    base = PlaceNet(conf).eval()
    base.load_state_dict(state)
    grid_conf = {**conf, "gem_grid": [1, 2]}
    tiled, pca = PlaceNet(grid_conf).eval(), PlaceNet(grid_conf).eval()
    tiled.load_pretrained(state)
    # The images train_place starts place_street_indoor_grid.yaml's run from (its init.images, its seed).
    cfg = yaml.safe_load((ROOT / "training/configs/place_street_indoor_grid.yaml").read_text())
    places = train_place.build_set(cfg["data"]["train"], cfg["data"], True, "data.train")
    store = train_place.ImageStore(places, cfg["data"]["store_size"], conf["in_channels"] == 3)
    pca.load_pretrained(state, train_place.pretrained_init_images(pca, state, store, places, cfg["init"],
                                                                  cfg["train"]["seed"], torch.device("cpu")))

    def concat(x: torch.Tensor) -> torch.Tensor:
        cells = tiled.pool(base.features(x)).reshape(len(x), 5, -1) * 5**0.5
        return F.normalize(F.normalize(base.projection(cells), dim=2).flatten(1), dim=1)

    return {"global (as trained)": base, "cells concat, 1280-d": concat, "tiled gem_grid [1, 2]": tiled,
            "PCA gem_grid [1, 2]": pca}


@torch.no_grad()
def recall(fn, bench, conf: dict, chunk: int = 64) -> dict[int, float]:
    def describe(paths: list[Path]) -> np.ndarray:
        return torch.cat([fn(batch([read_image(p, rgb=conf["in_channels"] == 3) for p in paths[k : k + chunk]],
                                   conf)) for k in range(0, len(paths), chunk)]).numpy()

    q, r = describe(bench.queries), describe(bench.references)
    return recall_at_n(np.argsort(-(q @ r.T), axis=1), bench.positives)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "place_street_indoor" / "final.pt"),
                        help="a global-GeM PlaceNet .pt")
    parser.add_argument("--nordland", action="store_true", help="also Nordland places 0-899 (slower)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    ckpt = torch.load(args.model, map_location="cpu", weights_only=True)
    state, conf = ckpt.get("model", ckpt), ckpt["conf"]
    if conf["head"] != "gem" or conf.get("gem_grid", [1]) != [1]:
        parser.error(f"{args.model} is not a global-GeM PlaceNet "
                     f"(head {conf['head']}, gem_grid {conf.get('gem_grid')})")
    benches = [load_corridor(DATA / "vpr_corridor", (0, 10**6))]  # the whole folder, as in session 11
    if args.nordland:
        benches.append(load_nordland(DATA / "vpr_nordland"))
    command = ".venv/bin/python experiments/place_grid_probe.py " + " ".join(sys.argv[1:])
    lines = ["# PlaceNet: layout probe (grid pooling of a global-GeM model, no training)", "",
             f"- command: `{command}`", f"- model: {args.model}", "- Recall@1 / @5 / @10 in %", "",
             "| variant | " + " | ".join(b.name for b in benches) + " |", "|---|" + "---|" * len(benches)]
    for name, fn in variants(state, conf).items():
        cells = []
        for b in benches:
            r = recall(fn, b, conf)
            cells.append(f"{100 * r[1]:.1f} / {100 * r[5]:.1f} / {100 * r[10]:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    out = Path(args.out) / f"{date.today().isoformat()}-place-grid-probe.md"
    out.write_text("\n".join(lines + [""]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
