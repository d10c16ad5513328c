"""Geolocation from place matches: great-circle distance, local metric frames, weighted position estimates.

- :func:`haversine_m`: great-circle distance on a sphere of the mean Earth
  radius (IUGG R₁ = 6 371 008.8 m), the usual score of image geolocation.
- :class:`LocalTangentPlane`: WGS-84 latitude/longitude/altitude ↔ local
  east-north-up metres around an origin (exact, through ECEF), used to turn
  GPS/INS tracks into metric positions (training positives and negatives,
  keyframe spacing) and to average positions.
- :func:`estimate_location`: latitude/longitude of a query from its top
  matches with known positions: the matches within ``cluster_radius_m`` of the
  best one (others are treated as outliers: a wrong place far away), averaged
  in ENU metres with weights ``exp((s − s_best) / temperature)`` of their
  similarity ``s``; ``std_m`` is their weighted spread, floored at ``min_std_m``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deep_vision.errors import ConfigError

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius R1
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)


def haversine_m(lat1: np.ndarray | float, lon1: np.ndarray | float, lat2: np.ndarray | float,
                lon2: np.ndarray | float, radius_m: float = EARTH_RADIUS_M) -> np.ndarray | float:
    """Great-circle distance in metres between points given in degrees (broadcasts)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    d = 2.0 * radius_m * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if np.ndim(d) == 0 else d


def geodetic_to_ecef(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """[N x 3] ECEF metres from WGS-84 latitude, longitude (degrees) and ellipsoidal altitude (m)."""
    lat, lon, alt = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float)), np.asarray(alt, float)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    x = (n + alt) * np.cos(lat) * np.cos(lon)
    y = (n + alt) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt) * np.sin(lat)
    return np.stack([x, y, z], axis=-1)


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude, longitude (degrees) and altitude (m) of ECEF points [N x 3] (Bowring, then 3 fixed-point steps)."""
    xyz = np.asarray(xyz, float)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lon = np.arctan2(y, x)
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(5):
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
        alt = p / np.maximum(np.cos(lat), 1e-12) - n
        lat = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + alt)))
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    alt = p / np.maximum(np.cos(lat), 1e-12) - n
    return np.degrees(lat), np.degrees(lon), alt


class LocalTangentPlane:
    """East-north-up metres around an origin (latitude, longitude in degrees, altitude in m)."""

    def __init__(self, lat0: float, lon0: float, alt0: float = 0.0) -> None:
        if not (-90.0 <= lat0 <= 90.0 and -180.0 <= lon0 <= 360.0):
            raise ConfigError(f"origin latitude/longitude out of range: {lat0}, {lon0}")
        self.lat0, self.lon0, self.alt0 = float(lat0), float(lon0), float(alt0)
        self._origin = geodetic_to_ecef(self.lat0, self.lon0, self.alt0)
        la, lo = np.radians(self.lat0), np.radians(self.lon0)
        # Rows: east, north, up unit vectors in ECEF.
        self._R = np.array([
            [-np.sin(lo), np.cos(lo), 0.0],
            [-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)],
            [np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)],
        ])

    def to_enu(self, lat: np.ndarray | float, lon: np.ndarray | float, alt: np.ndarray | float = 0.0) -> np.ndarray:
        """[N x 3] (or [3]) east, north, up metres."""
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        alt = np.broadcast_to(np.asarray(alt, float), lat.shape)
        return (geodetic_to_ecef(lat, lon, alt) - self._origin) @ self._R.T

    def to_geodetic(self, enu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latitude, longitude (degrees), altitude (m) of east-north-up points [N x 3] (or [3])."""
        enu = np.asarray(enu, float)
        if enu.shape[-1] == 2:
            enu = np.concatenate([enu, np.zeros(enu.shape[:-1] + (1,))], axis=-1)
        return ecef_to_geodetic(enu @ self._R + self._origin)


@dataclass
class GeoEstimate:
    """Estimated position of a query from its matches."""

    latitude: float
    longitude: float
    altitude: float
    std_m: float  # 1-sigma horizontal uncertainty (weighted spread of the matches used, floored)
    matches_used: int


def estimate_location(latitudes: Sequence[float] | np.ndarray, longitudes: Sequence[float] | np.ndarray,
                      similarities: Sequence[float] | np.ndarray, altitudes: Sequence[float] | np.ndarray | None = None,
                      *, cluster_radius_m: float = 25.0, temperature: float = 0.05,
                      min_std_m: float = 5.0) -> GeoEstimate | None:
    """Weighted position of a query from matches (best match first or not; NaN positions are skipped).

    See the module docstring. Returns None when no match has a position.
    """
    lat = np.asarray(latitudes, float)
    lon = np.asarray(longitudes, float)
    sim = np.asarray(similarities, float)
    alt = np.zeros_like(lat) if altitudes is None else np.nan_to_num(np.asarray(altitudes, float))
    if not (lat.shape == lon.shape == sim.shape == alt.shape):
        raise ValueError(f"latitudes, longitudes, similarities (and altitudes) differ in length: "
                         f"{lat.shape}, {lon.shape}, {sim.shape}, {alt.shape}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    ok = np.isfinite(lat) & np.isfinite(lon) & np.isfinite(sim)
    if not ok.any():
        return None
    lat, lon, sim, alt = lat[ok], lon[ok], sim[ok], alt[ok]
    best = int(np.argmax(sim))
    plane = LocalTangentPlane(lat[best], lon[best], alt[best])
    enu = plane.to_enu(lat, lon, alt)
    keep = np.linalg.norm(enu[:, :2], axis=1) <= cluster_radius_m
    w = np.exp((sim[keep] - sim[best]) / temperature)
    w /= w.sum()
    mean = (w[:, None] * enu[keep]).sum(axis=0)
    spread = float(np.sqrt((w * np.sum((enu[keep, :2] - mean[:2]) ** 2, axis=1)).sum()))
    la, lo, al = plane.to_geodetic(mean)
    return GeoEstimate(float(la), float(lo), float(al), max(spread, float(min_std_m)), int(keep.sum()))
