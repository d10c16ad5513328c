"""Geolocation: haversine distances, WGS-84 ↔ local ENU, the weighted estimate from matches, RobotCar GPS files."""

from __future__ import annotations

import numpy as np
import pytest

from deep_vision.estimators.geolocation import (
    EARTH_RADIUS_M,
    LocalTangentPlane,
    estimate_location,
    haversine_m,
)


def test_haversine_known_values():
    # One degree of latitude along a meridian: R·π/180.
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(EARTH_RADIUS_M * np.pi / 180, rel=1e-12)
    # Antipodes: half the circumference.
    assert haversine_m(10.0, 20.0, -10.0, -160.0) == pytest.approx(np.pi * EARTH_RADIUS_M, rel=1e-7)
    # Paris (Notre-Dame) – London (St Paul's): about 343.5 km on the sphere.
    assert haversine_m(48.8530, 2.3499, 51.5138, -0.0984) == pytest.approx(343.9e3, rel=3e-3)
    d = haversine_m(np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([0.0, 90.0]))
    assert d.shape == (2,) and d[0] == 0.0 and d[1] == pytest.approx(EARTH_RADIUS_M * np.pi / 2)


def test_local_tangent_plane_round_trip_and_axes():
    plane = LocalTangentPlane(51.7520, -1.2577, 60.0)
    enu = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 250.0, 3.0], [-1234.5, 987.6, -10.0]])
    lat, lon, alt = plane.to_geodetic(enu)
    assert np.allclose(plane.to_enu(lat, lon, alt), enu, atol=1e-6)
    assert lat[0] == pytest.approx(51.7520) and lon[0] == pytest.approx(-1.2577) and alt[0] == pytest.approx(60.0)
    assert lat[2] > lat[0] and lon[1] > lon[0]  # north is north, east is east
    # Horizontal ENU distance (WGS-84 ellipsoid) agrees with the great-circle distance (sphere) within 0.5 %.
    assert haversine_m(lat[0], lon[0], lat[3], lon[3]) == pytest.approx(np.hypot(1234.5, 987.6), rel=5e-3)


def test_estimate_location_weights_and_outliers():
    plane = LocalTangentPlane(45.0, 7.0)
    pts = np.array([[0.0, 0.0], [4.0, 0.0], [2000.0, 0.0]])  # the third match is a wrong place far away
    lat, lon, _ = plane.to_geodetic(pts)
    est = estimate_location(lat, lon, [0.9, 0.9, 0.85])
    e = plane.to_enu(est.latitude, est.longitude, est.altitude)
    assert est.matches_used == 2 and e[0] == pytest.approx(2.0, abs=1e-3) and abs(e[1]) < 1e-3
    assert est.std_m >= 5.0
    # A much less similar second match barely moves the estimate.
    est = estimate_location(lat[:2], lon[:2], [0.9, 0.6])
    assert plane.to_enu(est.latitude, est.longitude, est.altitude)[0] < 0.1
    assert estimate_location([np.nan], [np.nan], [0.9]) is None
    with pytest.raises(ValueError, match="differ in length"):
        estimate_location([1.0], [2.0], [0.5, 0.6])


def test_robotcar_gps_and_images(tmp_path):
    """RobotCar's formats on a small folder made here (no RobotCar images are available)."""
    import cv2

    from deep_vision.io.vpr import read_robotcar_gps, read_robotcar_image, robotcar_images

    gps = tmp_path / "gps.csv"
    gps.write_text("timestamp,ins_status,latitude,longitude,altitude,northing,easting,down,utm_zone\n"
                   "1418381798000000,INS_SOLUTION_GOOD,51.7600,-1.2600,100.0,0,0,0,30U\n"
                   "1418381799000000,INS_SOLUTION_GOOD,51.7610,-1.2600,102.0,0,0,0,30U\n")
    track = read_robotcar_gps(gps)
    lat, lon, alt = track.interpolate(np.array([1418381798500000000], np.int64))
    assert lat[0] == pytest.approx(51.7605) and alt[0] == pytest.approx(101.0)
    cam = tmp_path / "stereo" / "centre"
    cam.mkdir(parents=True)
    bayer = np.zeros((8, 8), np.uint8)
    bayer[0::2, 1::2] = 200  # GBRG: blue at (0, 1)
    for t in (1418381798600000, 1418381798500000):
        cv2.imwrite(str(cam / f"{t}.png"), bayer)
    files, stamps = robotcar_images(cam)
    assert [f.stem for f in files] == ["1418381798500000", "1418381798600000"] and stamps[0] == 1418381798500000000
    rgb = read_robotcar_image(files[0], "gbrg", rgb=True)
    assert rgb.shape == (8, 8, 3) and rgb[..., 2].mean() > rgb[..., 0].mean()  # blue dominates
