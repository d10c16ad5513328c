"""Progress bars for the evaluation commands: one factory the protocols call per stage, closed at the end."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: ``progress(total, description)`` returns a callback taking the number of steps done.
Progress = Callable[[int, str], Callable[[int], None]]


@contextmanager
def progress_bars() -> Iterator[Progress]:
    """A :data:`Progress` drawing tqdm bars on stderr (updated every 10 s when it is not a terminal); log lines
    are written above the bars; every bar is closed on exit."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bars: list = []

    def factory(total: int, desc: str) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=desc, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10)
        bars.append(bar)
        return lambda n: bar.update(n - bar.n)

    try:
        with logging_redirect_tqdm():
            yield factory
    finally:
        for bar in bars:
            bar.close()


def cli_command() -> str:
    """The ``deep-vision evaluate ...`` command line that is running (for reports), quoted as a shell would need
    it (an empty ``--kitti-frames ''`` stays visible)."""
    if sys.argv[0].endswith("deep-vision"):
        return "deep-vision " + shlex.join(sys.argv[1:])
    return "deep-vision evaluate " + shlex.join(sys.argv[2:])
