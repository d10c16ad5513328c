"""Place-recognition data: VPR benchmark folders (query/reference + ground truth) and GPS/INS tracks.

Benchmarks (``../shared/data``; see each folder's ``GT.md``):

- **Nordland** (``vpr_nordland``): ``summer/`` (references) and ``winter/``
  (queries), 64×32 thumbnails of one railway line; the same file name is the
  same place (tolerance ±0). Left out: the frames listed in
  ``DERIVED_dark_or_blank_frames.csv`` (tunnels, black frames) in both
  seasons, the first 17 places (byte-identical frames at the station in both
  seasons) and, as queries, the last 15 winter frames (the train standing
  still: identical, ambiguous). Split: places ``< 900`` are the evaluation
  part (:data:`NORDLAND_EVAL_PLACES`), places ``≥ 900`` may be trained on
  (:data:`NORDLAND_TRAIN_PLACES`).
- **Corridor** (``vpr_corridor``): ``query/`` and ``ref/`` (111 each,
  160×120 colour); query i matches references i−2 … i+2
  (``DERIVED_ground_truth.csv``). Split like Nordland's: places ``< 56`` are
  the evaluation part (:data:`CORRIDOR_EVAL_PLACES`), places ``≥ 61`` may be
  trained on (:data:`CORRIDOR_TRAIN_PLACES`); the 5 places between keep every
  evaluation query's ±2 window and every training query's apart.

GPS/INS: :func:`read_robotcar_gps` reads Oxford RobotCar ``gps.csv`` /
``ins.csv`` (microsecond timestamps, WGS-84 latitude/longitude/altitude);
:func:`robotcar_images` lists a RobotCar camera folder (``<timestamp>.png``,
Bayer-encoded) and :func:`read_robotcar_image` demosaics one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deep_vision.errors import DatasetError

NORDLAND_EVAL_PLACES = (0, 900)  # [first, end): evaluation part of Nordland; never trained on
NORDLAND_TRAIN_PLACES = (900, 1_000_000)  # [first, end): the part training may use
CORRIDOR_EVAL_PLACES = (0, 56)  # [first, end): evaluation part of Corridor; never trained on
CORRIDOR_TRAIN_PLACES = (61, 1_000_000)  # [first, end): the part training may use
NORDLAND_STATION_FRAMES = 17  # first places: identical frames in both seasons
NORDLAND_STILL_WINTER_FRAMES = 15  # last winter frames: the train standing still
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")


@dataclass
class VprBenchmark:
    """Query and reference images of one benchmark with the correct references of each query."""

    name: str
    queries: list[Path]
    references: list[Path]
    positives: list[np.ndarray]  # per query: indices into ``references`` that count as correct
    query_places: list[int] = field(default_factory=list)  # original place index of each query
    reference_places: list[int] = field(default_factory=list)
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.positives) != len(self.queries):
            raise DatasetError(f"{self.name}: {len(self.queries)} queries but {len(self.positives)} ground-truth rows")


def read_image(path: str | Path, rgb: bool = False) -> np.ndarray:
    """[H x W] uint8 grey (or [H x W x 3] RGB with ``rgb``) image from a file."""
    flag = cv2.IMREAD_COLOR if rgb else cv2.IMREAD_GRAYSCALE
    image = cv2.imread(str(path), flag)
    if image is None:
        raise DatasetError(f"cannot read image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb else image


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"Could not find any image in root: {folder}")
    return files


def nordland_excluded(root: str | Path) -> set[str]:
    """File names of dark or blank Nordland frames (either season), from ``DERIVED_dark_or_blank_frames.csv``."""
    path = Path(root) / "DERIVED_dark_or_blank_frames.csv"
    if not path.is_file():
        raise DatasetError(f"Nordland exclusion list not found: {path}")
    with path.open(newline="") as f:
        return {row["file"] for row in csv.DictReader(f)}


def load_nordland(root: str | Path, places: tuple[int, int] = NORDLAND_EVAL_PLACES, *,
                  exclude: bool = True) -> VprBenchmark:
    """Winter queries against summer references for places in ``[places[0], places[1])`` (see the module docstring)."""
    root = Path(root)
    summer, winter = _images(root / "summer"), _images(root / "winter")
    if [p.name for p in summer] != [p.name for p in winter]:
        raise DatasetError(f"{root}: summer/ and winter/ do not hold the same file names")
    n = len(summer)
    first, end = max(0, places[0]), min(n, places[1])
    if first >= end:
        raise DatasetError(f"{root}: no Nordland place in [{places[0]}, {places[1]}) (the folder has {n})")
    bad = nordland_excluded(root) if exclude else set()
    ref_idx = [i for i in range(first, end)
               if not exclude or (summer[i].name not in bad and i >= NORDLAND_STATION_FRAMES)]
    query_idx = [i for i in ref_idx if not exclude or i < n - NORDLAND_STILL_WINTER_FRAMES]
    position = {place: k for k, place in enumerate(ref_idx)}
    return VprBenchmark(
        name=f"nordland[{first}:{end}]",
        queries=[winter[i] for i in query_idx],
        references=[summer[i] for i in ref_idx],
        positives=[np.array([position[i]]) for i in query_idx],
        query_places=query_idx,
        reference_places=ref_idx,
        notes=f"winter queries vs summer references, places {first}-{end - 1}, tolerance ±0"
              + (f"; {end - first - len(ref_idx)} dark/blank/station places left out" if exclude else ""),
    )


def load_corridor(root: str | Path, places: tuple[int, int] = CORRIDOR_EVAL_PLACES) -> VprBenchmark:
    """Corridor queries against references with the ±2 ground truth of ``DERIVED_ground_truth.csv``, both restricted
    to places in ``[places[0], places[1])`` (positives outside the range are dropped, as the ground truth itself
    clips them at the folder's ends); ``(0, 10**6)`` is the whole folder."""
    root = Path(root)
    queries, refs = _images(root / "query"), _images(root / "ref")
    gt_path = root / "DERIVED_ground_truth.csv"
    if not gt_path.is_file():
        raise DatasetError(f"corridor ground truth not found: {gt_path}")
    positives: dict[int, np.ndarray] = {}
    with gt_path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip().isdigit():
                continue  # header
            positives[int(row[0])] = np.array([int(v) for v in row[2].split()], dtype=np.int64)
    missing = [i for i in range(len(queries)) if i not in positives]
    if missing:
        raise DatasetError(f"{gt_path}: no ground truth for queries {missing[:5]}")
    if any(int(p.max()) >= len(refs) for p in positives.values()):
        raise DatasetError(f"{gt_path}: reference index beyond the {len(refs)} images in {root / 'ref'}")
    first = max(0, places[0])
    query_idx = list(range(first, min(len(queries), places[1])))
    ref_idx = list(range(first, min(len(refs), places[1])))
    if not query_idx or not ref_idx:
        raise DatasetError(f"{root}: no Corridor place in [{places[0]}, {places[1]}) (the folder has {len(queries)})")
    whole = len(query_idx) == len(queries) and len(ref_idx) == len(refs)
    return VprBenchmark(name="corridor" if whole else f"corridor[{first}:{ref_idx[-1] + 1}]",
                        queries=[queries[i] for i in query_idx], references=[refs[j] for j in ref_idx],
                        positives=[positives[i][(positives[i] >= first) & (positives[i] <= ref_idx[-1])] - first
                                   for i in query_idx],
                        query_places=query_idx, reference_places=ref_idx,
                        notes="query i matches references i-2..i+2 (VPR-Bench ground truth)"
                              + ("" if whole else f", places {first}-{ref_idx[-1]}"))


# ------------------------------------------------------------------ RobotCar GPS / INS
@dataclass
class GpsTrack:
    """Timestamped WGS-84 positions."""

    stamps_ns: np.ndarray  # [N] int64
    latitude: np.ndarray  # [N] degrees
    longitude: np.ndarray  # [N] degrees
    altitude: np.ndarray  # [N] metres

    def interpolate(self, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latitude, longitude, altitude at ``stamps_ns`` (linear; clamped at the ends)."""
        t = np.asarray(stamps_ns, np.int64)
        return (np.interp(t, self.stamps_ns, self.latitude), np.interp(t, self.stamps_ns, self.longitude),
                np.interp(t, self.stamps_ns, self.altitude))


def read_robotcar_gps(path: str | Path) -> GpsTrack:
    """RobotCar ``gps/gps.csv`` or ``gps/ins.csv`` (``timestamp`` in µs, ``latitude``, ``longitude``, ``altitude``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"RobotCar GPS/INS file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"timestamp", "latitude", "longitude", "altitude"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        rows = [(int(r["timestamp"]), float(r["latitude"]), float(r["longitude"]), float(r["altitude"]))
                for r in reader]
    if not rows:
        raise DatasetError(f"{path}: no GPS rows")
    rows.sort()
    t, lat, lon, alt = (np.array(c) for c in zip(*rows))
    return GpsTrack(t.astype(np.int64) * 1000, lat.astype(float), lon.astype(float), alt.astype(float))


def robotcar_images(folder: str | Path) -> tuple[list[Path], np.ndarray]:
    """Images of a RobotCar camera folder (``<timestamp µs>.png``), sorted, with stamps in ns."""
    files = [p for p in _images(Path(folder)) if p.stem.isdigit()]
    if not files:
        raise DatasetError(f"{folder}: no RobotCar images named <timestamp>.png")
    files.sort(key=lambda p: int(p.stem))
    return files, np.array([int(p.stem) * 1000 for p in files], np.int64)


# RobotCar's stereo camera records GBRG, the mono cameras RGGB (SDK's image.py); OpenCV names the
# patterns after the second row (see deep_vision.io.image).
_ROBOTCAR_BAYER = {"gbrg": cv2.COLOR_BayerGR2RGB, "rggb": cv2.COLOR_BayerBG2RGB}


def read_robotcar_image(path: str | Path, pattern: str = "gbrg", rgb: bool = False) -> np.ndarray:
    """A demosaiced RobotCar frame: [H x W] grey, or RGB with ``rgb``. Already-colour files pass through."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read image: {path}")
    if raw.ndim == 2:
        if pattern not in _ROBOTCAR_BAYER:
            raise DatasetError(f"unknown Bayer pattern {pattern!r}; choose {', '.join(_ROBOTCAR_BAYER)}")
        colour = cv2.cvtColor(raw.astype(np.uint8), _ROBOTCAR_BAYER[pattern])
    else:
        colour = cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB)
    return colour if rgb else cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)
