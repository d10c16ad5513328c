"""Point the ROS 2 wheels' CMake exports at this interpreter's headers.

The message wheels were built in a manylinux container; their exported CMake
targets name include folders of that container
(``/opt/python/cp311-cp311/include/python3.11`` and numpy's ``_core/include``
under it). CMake refuses targets whose include folders do not exist, so a
``colcon build`` of our interface package fails until the paths name this
interpreter's folders. Rewriting the venv's own export files needs no root.
Idempotent.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_PREFIX = "/opt/python/cp311-cp311"


def main() -> int:
    import numpy

    prefix = Path(sys.prefix)
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    if not Path(py_include, "Python.h").is_file():
        print(f"fix_ros_wheel_cmake: no Python.h in {py_include}; install the Python headers", file=sys.stderr)
        return 1
    replacements = {
        f"{BUILD_PREFIX}/include/python3.11": py_include,
        f"{BUILD_PREFIX}/lib/python3.11/site-packages/numpy/_core/include": np_include,
    }
    changed = 0
    for path in (prefix / "share").glob("*/cmake/*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if BUILD_PREFIX not in text:
            continue
        new = text
        for old, repl in replacements.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    print(f"fix_ros_wheel_cmake: rewrote {changed} CMake export file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
