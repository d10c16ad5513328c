"""Screenshot of a Rerun recording, for docs/images/viewer.png: a headless viewer (software Vulkan is enough)
opens the recording, waits until it has loaded, and saves what it shows in the recording's own layout.

    WGPU_BACKEND=vulkan .venv/bin/python experiments/viewer_screenshot.py run.rrd shot.png [--wait 60]
    convert shot.png -resize 1600x -strip -colors 256 docs/images/viewer.png

(``rerun --screenshot-to`` on a virtual display shoots before a 20 MB recording has loaded.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recording")
    ap.add_argument("png")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to let the viewer load the recording")
    ap.add_argument("--port", type=int, default=9899)
    args = ap.parse_args()
    from rerun.experimental import ViewerClient

    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    viewer = ViewerClient.spawn(headless=True, port=args.port, hide_welcome_screen=True)
    try:
        viewer.open(str(Path(args.recording).resolve()))
        time.sleep(args.wait)
        viewer.save_screenshot(str(Path(args.png).resolve()))
    finally:
        viewer.quit()


if __name__ == "__main__":
    main()
