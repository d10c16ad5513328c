"""Configuration of the synthetic camera world (defaults: a KITTI-like car camera)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deep_vision.errors import ConfigError


@dataclass
class CameraConfig:
    width: int = 1241  # image width in pixels (KITTI odometry size by default)
    height: int = 376  # image height in pixels
    fx: float | None = None  # focal length in pixels; None: KITTI 00's 718.856 scaled to `width`
    fy: float | None = None  # None: equal to fx
    cx: float | None = None  # principal point; None: KITTI 00's, scaled
    cy: float | None = None
    encoding: str = "mono8"  # mono8 (grey, like KITTI image_0) or rgb8
    fps: float = 10.0  # frame rate in Hz
    height_m: float = 1.65  # camera height above the ground (KITTI: 1.65 m)
    forward_m: float = 1.2  # camera position ahead of base_link (rear axle, on the ground)
    frame_id: str = "camera_optical_frame"

    def __post_init__(self) -> None:
        if self.encoding not in ("mono8", "rgb8"):
            raise ConfigError(f"camera.encoding must be mono8 or rgb8, got {self.encoding!r}")
        if self.width < 32 or self.height < 32:
            raise ConfigError(f"camera size must be at least 32x32, got {self.width}x{self.height}")
        if self.fps <= 0:
            raise ConfigError(f"camera.fps must be positive, got {self.fps}")


@dataclass
class RouteConfig:
    # Corners of the closed route's centre line (metres, counter-clockwise), rounded by corner_radius_m.
    corners: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0], [90.0, 0.0], [90.0, 45.0], [0.0, 45.0]])
    corner_radius_m: float = 10.0  # radius of the rounded corners
    speed_mps: float = 10.0  # driving speed (36 km/h: about 1 m per frame at 10 Hz, as in KITTI)
    # The speed swings by this much either side of speed_mps (speed_mps + change * sin(2 pi t / period)), from the
    # start, speeding up first: traffic. 0 (the default): a steady speed.
    speed_change_mps: float = 0.0
    speed_period_s: float = 15.0
    # Lateral offset of each lap from the centre line (m, left positive); laps beyond the list repeat it.
    lap_offsets_m: list[float] = field(default_factory=lambda: [0.0, 1.0, -0.6])
    offset_ramp_m: float = 25.0  # distance over which the car changes to the next lap's offset
    pitch_amplitude_deg: float = 0.4  # body pitch oscillation (suspension), 0 to switch off
    roll_amplitude_deg: float = 0.3  # body roll oscillation
    bounce_m: float = 0.01  # vertical body oscillation

    def __post_init__(self) -> None:
        if len(self.corners) < 3:
            raise ConfigError(f"route.corners needs at least 3 points, got {len(self.corners)}")
        if self.speed_mps <= 0:
            raise ConfigError(f"route.speed_mps must be positive, got {self.speed_mps}")
        if not 0 <= self.speed_change_mps < self.speed_mps:
            raise ConfigError(f"route.speed_change_mps must be in [0, speed_mps) (the car never stops or reverses), "
                              f"got {self.speed_change_mps}")
        if not self.speed_period_s > 0:
            raise ConfigError(f"route.speed_period_s must be positive, got {self.speed_period_s}")
        if not self.lap_offsets_m:
            raise ConfigError("route.lap_offsets_m must not be empty")
        if max(abs(o) for o in self.lap_offsets_m) >= self.corner_radius_m:
            raise ConfigError("route.lap_offsets_m must stay below route.corner_radius_m")


@dataclass
class SceneConfig:
    # street: box buildings along a road (KITTI-like); indoor: a corridor along the route, walls floor to
    # ceiling with doors, notice boards, windows into rooms, lockers, a carpet / tile floor and a tiled ceiling
    # with light panels (use a small route.corner_radius_m, lap offsets inside the corridor, a walking speed).
    kind: str = "street"
    road_width_m: float = 8.0  # asphalt width
    sidewalk_m: float = 3.0  # pavement beside the road
    margin_m: float = 40.0  # ground texture beyond the route's bounding box
    ground_texel_m: float = 0.04  # ground texture resolution
    facade_texel_m: float = 0.05  # building texture resolution
    setback_m: list[float] = field(default_factory=lambda: [7.0, 18.0])  # façade distance from the centre line
    inner_setback_m: list[float] = field(default_factory=lambda: [6.5, 9.0])  # same, inside the loop
    building_width_m: list[float] = field(default_factory=lambda: [7.0, 22.0])
    building_height_m: list[float] = field(default_factory=lambda: [5.0, 20.0])
    building_depth_m: list[float] = field(default_factory=lambda: [6.0, 12.0])
    building_gap_m: list[float] = field(default_factory=lambda: [0.5, 8.0])
    sun_azimuth_deg: float = 35.0  # direction the sunlight comes from (shades façades)
    sun_elevation_deg: float = 40.0
    haze_distance_m: float = 250.0  # distance at which the ground fades halfway to haze
    sensor_noise: float = 1.5  # std-dev of per-pixel sensor noise (8-bit levels), per frame
    corridor_width_m: list[float] = field(default_factory=lambda: [2.2, 3.2])  # indoor: wall to wall, per edge
    ceiling_m: list[float] = field(default_factory=lambda: [2.4, 3.2])  # indoor: ceiling height range (per world)
    wall_panel_m: list[float] = field(default_factory=lambda: [2.0, 7.0])  # indoor: wall stretch with one texture
    # indoor: 0: every wall panel its own texture; N: a repetitive corridor, as real office corridors are: the
    # walls repeat N panel designs in one paint (the same doors, lockers and boards again and again), the
    # ceiling lights sit on a regular grid and the floor is an even carpet, so only the order of the panels and
    # the corridor's shape tell places apart
    wall_designs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("street", "indoor"):
            raise ConfigError(f"scene.kind must be street or indoor, got {self.kind!r}")
        if self.wall_designs < 0:
            raise ConfigError(f"scene.wall_designs must be 0 (off) or a number of designs, got {self.wall_designs}")


@dataclass
class RevisitConfig:
    max_distance_m: float = 4.0  # frames count as a revisit within this distance (camera centres)
    max_heading_deg: float = 30.0  # ... and this heading difference
    min_separation_s: float = 20.0  # ... and at least this far apart in time


@dataclass
class SyntheticWorldConfig:
    seed: int = 0  # one seed decides the world, the textures and the sensor noise
    frames: int = 600
    start_time_s: float = 1_700_000_000.0  # stamp of the first frame (ROS time)
    camera: CameraConfig = field(default_factory=CameraConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    revisits: RevisitConfig = field(default_factory=RevisitConfig)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"frames must be at least 1, got {self.frames}")
        if self.scene.kind == "indoor":
            half = min(self.scene.corridor_width_m) / 2
            if max(abs(o) for o in self.route.lap_offsets_m) >= half - 0.3:
                raise ConfigError(f"route.lap_offsets_m must stay 0.3 m inside the corridor (half width {half} m)")
            if self.camera.height_m >= min(self.scene.ceiling_m) - 0.2:
                raise ConfigError("camera.height_m must be below the ceiling (scene.ceiling_m)")
