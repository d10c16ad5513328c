"""Record a synthetic sequence as a rosbag2 with its ground truth beside it.

Output folder ``DIR`` (a rosbag2 folder)::

    DIR/metadata.yaml, DIR/DIR_0.mcap       the bag (see deep_vision.io.bag for topics)
    DIR/ground_truth/poses.txt              KITTI-format camera poses (camera 0 frame)
    DIR/ground_truth/times.txt              seconds since the first frame (KITTI times.txt)
    DIR/ground_truth/calib.txt              KITTI-style calibration ("P0: ..." 3x4)
    DIR/ground_truth/homographies.txt       9 numbers per line: H from frame i-1 to frame i
    DIR/ground_truth/revisits.csv           query,match,distance_m,heading_deg,...
    DIR/ground_truth/world.yaml             the configuration that made it (reproducible)
    DIR/preview.png                         a few frames and the route map

The bag also carries the ground-truth homography on ``/ground_truth/homography``
(``deep_vision_msgs/Homography``).
"""

from __future__ import annotations

import csv
import logging
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from deep_vision.config import to_dict
from deep_vision.geometry.kitti import write_kitti_poses
from deep_vision.geometry.transforms import body_velocities
from deep_vision.io import bag as bagio
from deep_vision.io import rosmsg
from deep_vision.synthetic.config import SyntheticWorldConfig
from deep_vision.synthetic.sequence import SyntheticSequence
from deep_vision.synthetic.world import building_faces

logger = logging.getLogger(__name__)

GROUND_TRUTH_HOMOGRAPHY_TOPIC = "/ground_truth/homography"
MAP_FRAME = "map"
BASE_FRAME = "base_link"


@dataclass
class Recording:
    """Where a recorded synthetic sequence went."""

    bag: Path
    ground_truth: Path
    preview: Path
    frames: int
    revisits: int
    message_counts: dict[str, int]


_WORKER_SEQUENCE: SyntheticSequence | None = None


def _init_worker(config: SyntheticWorldConfig) -> None:
    import cv2

    global _WORKER_SEQUENCE
    cv2.setNumThreads(1)
    _WORKER_SEQUENCE = SyntheticSequence(config)


def _render(i: int) -> np.ndarray:
    assert _WORKER_SEQUENCE is not None
    return _WORKER_SEQUENCE.image(i)


def render_frames(sequence: SyntheticSequence, workers: int = 0) -> Iterator[np.ndarray]:
    """Frames in order, rendered by ``workers`` processes (0: one per core, 1: in this process).

    Workers are spawned, not forked (OpenCV's thread pool does not survive a
    fork), and each builds the world from the config: it is deterministic, so
    every worker renders the same world.
    """
    workers = workers or (mp.cpu_count() or 1)
    if workers <= 1 or len(sequence) < 16:
        yield from sequence.images()
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(sequence.config,)) as pool:
        yield from pool.imap(_render, range(len(sequence)), chunksize=4)


def write_ground_truth_files(sequence: SyntheticSequence, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_kitti_poses(folder / "poses.txt", sequence.kitti_poses)
    np.savetxt(folder / "times.txt", sequence.trajectory.times, fmt="%.6e")
    P = sequence.camera.P
    (folder / "calib.txt").write_text("P0: " + " ".join(f"{v:.12e}" for v in P.reshape(-1)) + "\n")
    np.savetxt(folder / "homographies.txt", sequence.ground_homographies.reshape(len(sequence), 9), fmt="%.12e")
    stamps = sequence.stamps_ns
    with (folder / "revisits.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "match", "distance_m", "heading_deg", "query_stamp_ns", "match_stamp_ns"])
        for r in sequence.revisits:
            w.writerow([r.query, r.match, f"{r.distance_m:.4f}", f"{r.heading_deg:.3f}", stamps[r.query], stamps[r.match]])
    with (folder / "world.yaml").open("w") as f:
        yaml.safe_dump(to_dict(sequence.config), f, sort_keys=False)


def read_revisits(path: str | Path) -> list[tuple[int, int]]:
    """(query, match) frame pairs of a ``revisits.csv``."""
    with Path(path).open() as f:
        return [(int(row["query"]), int(row["match"])) for row in csv.DictReader(f)]


def write_preview(sequence: SyntheticSequence, frames: dict[int, np.ndarray], path: Path) -> Path:
    """PNG: sample frames and the route (coloured by lap) with revisit pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = sorted(frames)
    fig = plt.figure(figsize=(14, 3.2 + 2.2 * len(idx)))
    gs = fig.add_gridspec(len(idx), 2, width_ratios=[2.2, 1])
    for row, i in enumerate(idx):
        ax = fig.add_subplot(gs[row, 0])
        img = frames[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"frame {i}  t={sequence.trajectory.times[i]:.1f}s  lap {sequence.trajectory.lap[i]}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(gs[:, 1])
    xy = sequence.T_world_cam[:, :2, 3]
    laps = sequence.trajectory.lap
    for lap in np.unique(laps):
        m = laps == lap
        ax.plot(xy[m, 0], xy[m, 1], lw=1.5, label=f"lap {lap}")
    for face in building_faces(sequence.config):
        c = face.corners
        ax.plot(c[:2, 0], c[:2, 1], color="0.4", lw=0.8)
    for r in sequence.revisits[:: max(1, len(sequence.revisits) // 60)]:
        ax.plot(xy[[r.query, r.match], 0], xy[[r.query, r.match], 1], color="red", lw=0.5, alpha=0.6)
    for i in idx:
        ax.annotate(str(i), xy[i], fontsize=7)
    ax.set_aspect("equal")
    ax.set_title(f"route {sequence.route.length:.0f} m, {len(sequence.revisits)} revisit pairs (red)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def record(
    config: SyntheticWorldConfig,
    out: str | Path,
    storage: str = "mcap",
    compress: bool = False,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Recording:
    """Render ``config`` and write the bag, ground-truth files and preview to ``out``."""
    out = Path(out)
    sequence = SyntheticSequence(config)
    cam = sequence.camera
    c = config.camera
    stamps = sequence.stamps_ns
    homographies = sequence.ground_homographies
    lin, ang = body_velocities(sequence.T_world_base, sequence.trajectory.times)
    preview_idx = sorted({0, len(sequence) // 3, (2 * len(sequence)) // 3, len(sequence) - 1})
    preview: dict[int, np.ndarray] = {}
    with bagio.BagWriter(out, storage=storage, compress=compress) as bag:
        bag.write_static_transform(sequence.T_base_cam, int(stamps[0]), BASE_FRAME, c.frame_id)
        for i, image in enumerate(render_frames(sequence, workers)):
            stamp = int(stamps[i])
            bag.write_camera_frame(stamp, image, c.encoding, cam, c.frame_id)
            bag.write_ground_truth(stamp, sequence.T_map_base[i], lin[i], ang[i], MAP_FRAME, BASE_FRAME)
            if i > 0:
                bag.write(GROUND_TRUTH_HOMOGRAPHY_TOPIC, "deep_vision_msgs/msg/Homography", stamp,
                          rosmsg.homography_msg(homographies[i], stamp, int(stamps[i - 1]), c.frame_id, 0.0, True))
            if i in preview_idx:
                preview[i] = image
            if progress is not None:
                progress(i + 1)
        counts = dict(bag.counts)
    write_ground_truth_files(sequence, out / "ground_truth")
    preview_path = write_preview(sequence, preview, out / "preview.png")
    return Recording(bag=out, ground_truth=out / "ground_truth", preview=preview_path, frames=len(sequence),
                     revisits=len(sequence.revisits), message_counts=counts)
