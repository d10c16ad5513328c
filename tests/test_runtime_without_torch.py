"""The run-time paths need no PyTorch: an ONNX Runtime (or TensorRT) deployment installs only the package's
core requirements (setup.py puts torch in the ``ml`` extra, for training and export).

Each check runs in a fresh interpreter in which ``import torch`` fails, over rendered frames, with the
shipped models and config/perception.yaml: homography, place recognition with verification, VO in both
modes (hybrid with the ground-plane scale), the pose graph.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Makes ``import torch`` (and ``importlib.util.find_spec("torch")``) fail as where torch is not installed.
BLOCK_TORCH = r"""
import sys


class _NoTorch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch)
"""

SCRIPT = BLOCK_TORCH + r"""
import numpy as np
from deep_vision.geometry.camera import PinholeCamera
from deep_vision.params import load_params
from deep_vision.pipeline.build import build_homography, build_loop_detector, build_odometry, build_pose_graph

data = np.load(sys.argv[1])
frames, stamps = data["frames"], data["stamps"]
camera = PinholeCamera(*(int(v) for v in data["size"]), *(float(v) for v in data["fxfycxcy"]))
params = load_params(sys.argv[2])

homography, pairer = build_homography(params["homography_node"])
estimated = 0
for image, stamp in zip(frames, stamps):
    pair = pairer.push(image, int(stamp))
    if pair is not None:
        estimated += bool(homography.estimate(pair.prev, pair.curr).valid)
print("homography valid", estimated)

detector = build_loop_detector(params["place_recognition_node"])
keyframes = [detector.process(image, int(stamp), K=camera.K) for image, stamp in zip(frames, stamps)]
print("keyframes", sum(k is not None for k in keyframes), "dim", detector.recognizer.dim)

for mode, scale in (("network", "network"), ("hybrid", "ground")):
    p = {**params["odometry_node"], "mode": mode, "scale_source": scale, "threads": 1}
    vo = build_odometry(p, camera)
    results = [vo.process(image, int(stamp)) for image, stamp in zip(frames, stamps)]
    print(mode, "distance", round(results[-1].distance_m, 3), "scales", ",".join(sorted({r.scale for r in results})))

graph = build_pose_graph(params["pose_graph_node"])
print("pose graph", type(graph).__name__)
print("torch loaded:", "torch" in sys.modules)
"""


def test_perception_runs_without_torch(synthetic, tmp_path):
    frames = np.stack([synthetic.image(i) for i in range(12)])
    cam = synthetic.camera
    data = tmp_path / "frames.npz"
    np.savez(data, frames=frames, stamps=synthetic.stamps_ns[:12], size=[cam.width, cam.height],
             fxfycxcy=[cam.fx, cam.fy, cam.cx, cam.cy])
    params = ROOT / "config" / "perception.yaml"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(params)], check=False, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "torch loaded: False" in out
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert int(lines["homography"].split()[-1]) >= 1
    assert int(lines["keyframes"].split()[0]) >= 2
    # The car drives about 1 m per frame on the small world's route: both modes measured motion.
    for mode in ("network", "hybrid"):
        distance = float(lines[mode].split()[1])
        assert distance > 3.0, out
    assert "ground" in lines["hybrid"].split()[-1].split(","), out


def test_blocked_torch_is_reported_absent():
    """``torch_available`` (backend selection) says False, rather than raising, where torch cannot be imported."""
    code = BLOCK_TORCH + ('from deep_vision.inference.devices import cuda_available, torch_available\n'
                          'print(torch_available(), cuda_available() in (True, False))')
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("module", ["deep_vision.models.place_input", "deep_vision.models.vo_input"])
def test_input_modules_import_without_torch(module):
    code = BLOCK_TORCH + f'import {module}\nprint("ok")'
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
