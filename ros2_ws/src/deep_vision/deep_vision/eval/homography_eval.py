"""``deep-vision evaluate homography``: the network (raw and refined) against SIFT/ORB + RANSAC.

(a) DeTone et al.'s protocol: N pairs (fixed seed) of S×S patches with ρ=32
    cut from held-out real images; mean average corner error (MACE) per method,
    on the same pairs in the same run. A method that returns nothing scores the
    identity's error and counts as a failure.
(b) Real pairs with ground-truth homographies (Oxford "graf": img1 → img2…6):
    corner error at full resolution and the fraction under 3/5/10 px.

Writes ``<out>/homography-<date>.md`` (+ ``.json``) and a MACE histogram PNG.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from deep_vision.errors import DatasetError
from deep_vision.estimators.classical import FeatureHomography
from deep_vision.eval.homography_pairs import (
    PatchPair,
    list_images,
    load_grey,
    sample_pair,
)
from deep_vision.geometry.homography import corner_error, patch_corners

logger = logging.getLogger(__name__)

Method = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]


@dataclass
class MethodScores:
    errors: list[float] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def summary(self) -> dict[str, float]:
        e = np.asarray(self.errors)
        t = np.asarray(self.times_ms)
        return {
            "mace_px": float(e.mean()) if e.size else float("nan"),
            "median_px": float(np.median(e)) if e.size else float("nan"),
            "under_1px": float((e < 1).mean()) if e.size else float("nan"),
            "under_3px": float((e < 3).mean()) if e.size else float("nan"),
            "under_5px": float((e < 5).mean()) if e.size else float("nan"),
            "under_10px": float((e < 10).mean()) if e.size else float("nan"),
            "failures": int(self.failures),
            "n": int(e.size),
            "time_ms_p50": float(np.median(t)) if t.size else float("nan"),
        }


def held_out_images(data_root: Path) -> list[Path]:
    """Real images never used to train the shipped model: KITTI 00 frames 100–159, Oxford graf, EuRoC pairs."""
    files: list[Path] = []
    kitti = data_root / "kitti" / "sequences" / "00" / "image_0"
    if kitti.is_dir():
        files += list_images(kitti, "*.png", first=100, last=159)
    for folder, pattern in (("oxford_graf", "img*.png"), ("euroc_loop_pairs", "*.png")):
        if (data_root / folder).is_dir():
            files += list_images(data_root / folder, pattern)
    if not files:
        raise DatasetError(f"Could not find any held-out image in {data_root} (kitti, oxford_graf, euroc_loop_pairs)")
    return files


def make_pairs(files: list[Path], n: int, seed: int = 0, patch_size: int = 128, rho: float = 32.0) -> list[PatchPair]:
    """``n`` protocol-(a) pairs, deterministic for a seed (no photometric change, as the paper's test set)."""
    rng = np.random.default_rng(seed)
    images = [load_grey(f) for f in files]
    return [sample_pair(images[int(rng.integers(len(images)))], rng, patch_size, rho) for _ in range(n)]


def run_methods(pairs: list[PatchPair], methods: dict[str, Method], corners: np.ndarray,
                progress: Callable[[int], None] | None = None) -> dict[str, MethodScores]:
    scores = {name: MethodScores() for name in methods}
    for k, pair in enumerate(pairs):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            H = fn(pair.prev, pair.curr)
            scores[name].times_ms.append((time.perf_counter() - t0) * 1e3)
            if H is None or not np.all(np.isfinite(H)):
                scores[name].failures += 1
                H = np.eye(3)
            scores[name].errors.append(float(corner_error(H, pair.H, corners)))
        if progress:
            progress(k + 1)
    return scores


def graf_pairs(data_root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    folder = data_root / "oxford_graf"
    if not folder.is_dir():
        raise DatasetError(f"Oxford graf folder not found: {folder}")
    img1 = load_grey(folder / "img1.png")
    out = []
    for k in range(2, 7):
        H = np.loadtxt(folder / f"H1to{k}p")
        out.append((f"img1->img{k}", img1, load_grey(folder / f"img{k}.png"), H / H[2, 2]))
    return out


def estimator_methods(estimator) -> dict[str, Method]:
    """'network' (one pass) and 'network+refine' from a HomographyEstimator."""

    def raw(prev: np.ndarray, curr: np.ndarray) -> np.ndarray | None:
        return estimator.network_homography(prev, curr, passes=1)

    def refined(prev: np.ndarray, curr: np.ndarray) -> np.ndarray | None:
        result = estimator.estimate(prev, curr)
        return result.matrix

    return {"network (raw)": raw, "network + refinement": refined}


def classical_methods() -> dict[str, Method]:
    sift, orb = FeatureHomography("sift"), FeatureHomography("orb")
    return {"SIFT + RANSAC": sift.estimate, "ORB + RANSAC": orb.estimate, "identity": lambda a, b: np.eye(3)}


def histogram_png(scores: dict[str, MethodScores], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.logspace(-2, np.log10(100), 50)
    for name, s in scores.items():
        e = np.clip(np.asarray(s.errors), 1e-2, 100)
        ax.hist(e, bins=bins, histtype="step", lw=1.6, label=f"{name} (MACE {np.mean(s.errors):.2f})")
    ax.set_xscale("log")
    ax.set_xlabel("mean corner error (px, clipped to [0.01, 100])")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, stem: str, header: dict, protocol_a: dict[str, MethodScores],
                 protocol_b: dict[str, dict[str, float]] | None, hist: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Homography evaluation ({header['date']})", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", f"## (a) {header['pairs']} patch pairs, {header['patch_size']}×{header['patch_size']}, "
              f"ρ={header['rho']:g}, held-out real images", "",
              "| method | MACE px | median px | <1 px | <3 px | <10 px | failures | time/pair ms (p50) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, s in protocol_a.items():
        m = s.summary()
        lines.append(f"| {name} | {m['mace_px']:.2f} | {m['median_px']:.2f} | {m['under_1px']:.1%} | "
                     f"{m['under_3px']:.1%} | {m['under_10px']:.1%} | {m['failures']} | {m['time_ms_p50']:.2f} |")
    lines += ["", f"![MACE histogram]({hist.name})", ""]
    if protocol_b is not None:
        lines += ["## (b) Oxford graf, full resolution (800×640), corner error in px", "",
                  "| method | " + " | ".join(protocol_b[next(iter(protocol_b))]["pairs"]) + " | <3 px | <5 px | <10 px |",
                  "|---|" + "---|" * (len(protocol_b[next(iter(protocol_b))]["pairs"]) + 3)]
        for name, r in protocol_b.items():
            errs = r["errors"]
            cells = " | ".join(f"{e:.1f}" + ("*" if f else "") for e, f in zip(errs, r["failed"]))
            e = np.asarray(errs)
            lines.append(f"| {name} | {cells} | {(e < 3).mean():.0%} | {(e < 5).mean():.0%} | {(e < 10).mean():.0%} |")
        lines += ["", "\\* the method returned nothing; scored with the identity's error.", ""]
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    payload = {"header": header, "protocol_a": {k: v.summary() for k, v in protocol_a.items()},
               "protocol_b": protocol_b}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return md


def evaluate(estimator, data_root: Path, out: Path, pairs: int = 1000, seed: int = 0, command: str = "",
             progress_factory: Callable[[int, str], Callable[[int], None]] | None = None) -> Path:
    """Run protocols (a) and (b) and write the report; returns the markdown path."""
    S = estimator.patch_size
    files = held_out_images(data_root)
    test_pairs = make_pairs(files, pairs, seed, S, 32.0)
    methods = {**estimator_methods(estimator), **classical_methods()}
    prog = progress_factory(len(test_pairs), "protocol (a)") if progress_factory else None
    scores_a = run_methods(test_pairs, methods, patch_corners(S), prog)
    scores_b = None
    if (data_root / "oxford_graf").is_dir():
        scores_b = {}
        for name, fn in methods.items():
            errs, failed = [], []
            for label, a, b, H in graf_pairs(data_root):
                est = fn(a, b)
                failed.append(est is None)
                est = np.eye(3) if est is None else est
                errs.append(float(corner_error(est, H, patch_corners(a.shape[1], a.shape[0]))))
            scores_b[name] = {"pairs": [p[0] for p in graf_pairs(data_root)], "errors": errs, "failed": failed}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"homography-{date.today().isoformat()}"
    hist = histogram_png(scores_a, out / f"{stem}-mace.png", f"Protocol (a): {pairs} pairs, ρ=32")
    backend = getattr(estimator.backend, "describe", lambda: str(estimator.backend))()
    header = {"date": date.today().isoformat(), "command": command, "backend": backend, "pairs": pairs, "seed": seed,
              "patch_size": S, "rho": 32.0, "images": f"{len(files)} held-out images under {data_root}"}
    return write_report(out, stem, header, scores_a, scores_b, hist)


def update_card(model_path: Path, report_json: Path) -> Path:
    """Copy the held-out metrics of a report into the model card beside ``model_path``."""
    from deep_vision.inference.modelcard import ModelCard, card_path_for

    card_path = card_path_for(Path(model_path))
    card = ModelCard.load(card_path)
    report = json.loads(Path(report_json).read_text())
    a = report["protocol_a"]
    metrics = dict(card.metrics or {})
    metrics["held_out_protocol_a"] = {
        "description": f"{report['header']['pairs']} pairs of {report['header']['patch_size']}px patches, rho=32, "
                       f"seed {report['header']['seed']}, {report['header']['images']}",
        **{name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()} for name, m in a.items()},
    }
    if report.get("protocol_b"):
        metrics["held_out_oxford_graf_corner_error_px"] = {
            name: dict(zip(r["pairs"], [round(e, 2) for e in r["errors"]])) for name, r in report["protocol_b"].items()}
    metrics["report"] = Path(report_json).with_suffix(".md").name
    card.metrics = metrics
    card.save(card_path)
    return card_path
