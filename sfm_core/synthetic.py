"""Synthetic "landmark" scene rendered from cameras with exactly known poses.

Pure numpy (plus scipy for resizing) ray caster used to build the demo
collection and ground truth for the SfM pipeline.

Conventions (same as COLMAP / OpenCV):

* World frame: metres, z up, ground plane at z = 0.
* ``cam_from_world = (R, t)``: ``x_cam = R @ x_world + t``; R is (3, 3)
  float64, t is (3,) float64. The camera looks along +z, x points right and
  y points down in the image.
* Intrinsics ``(fx, fy, cx, cy, width, height)``: PINHOLE, so a camera point
  ``(X, Y, Z)`` lands on image point ``(fx * X / Z + cx, fy * Y / Z + cy)``.
* Pixel coordinates are continuous with the centre of the top-left pixel at
  (0.5, 0.5): the ray of pixel (row i, col j) goes through image point
  ``(j + 0.5, i + 0.5)``. Default principal point is the image centre
  ``(width / 2, height / 2)``.
* Face textures: ``P = origin + u * u_axis + v * v_axis`` with u, v in [0, 1];
  u runs along the texture columns, v along its rows, and texel (row r, col c)
  has its centre at ``u = (c + 0.5) / w``, ``v = (r + 0.5) / h``. Looking at a
  face from outside, its texture appears upright and unmirrored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

# Landmark layout: (name, lo corner, hi corner) of axis-aligned boxes in metres.
BOXES = (
    ("main", (-6.0, -4.0, 0.0), (6.0, 4.0, 9.0)),
    ("annex_east", (6.0, -3.0, 0.0), (10.0, 2.0, 5.0)),
    ("annex_south", (-3.0, -7.5, 0.0), (3.0, -4.0, 3.5)),
    ("pillar_nw", (-11.6, 4.4, 0.0), (-10.4, 5.6, 6.0)),
    ("kiosk", (8.0, -11.0, 0.0), (11.0, -9.0, 2.5)),
    ("pillar_sw", (-10.5, -9.5, 0.0), (-9.5, -8.5, 4.0)),
)
# A building whose two halves look alike (synth --nuisances symmetric): turned half a turn about
# the vertical axis through the origin, each wall lands on its twin, which carries the same
# texture. The roofs and the ground differ, as a real building's surroundings do.
SYMMETRIC_BOXES = (
    ("main", (-6.0, -4.0, 0.0), (6.0, 4.0, 9.0)),
    ("annex_east", (6.0, -3.0, 0.0), (10.0, 3.0, 5.0)),
    ("annex_west", (-10.0, -3.0, 0.0), (-6.0, 3.0, 5.0)),
)
_TWIN_BOX = {"main": "main", "annex_east": "annex_west", "annex_west": "annex_east"}
GROUND_HALF_SIZE = 40.0  # metres; the ground is a square centred on the origin
GROUND_TILES = 4  # ground texture is a GROUND_TILES x GROUND_TILES photo mosaic
GROUND_TILE_PX = 512
SUN = np.array([-0.45, -0.55, 0.7]) / np.linalg.norm([-0.45, -0.55, 0.7])
SKY_ZENITH = np.array([80.0, 125.0, 200.0], np.float32)
SKY_HORIZON = np.array([200.0, 210.0, 222.0], np.float32)
HAZE = np.array([150.0, 152.0, 140.0], np.float32)  # below horizon, past the ground


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lo <= p <= hi``, each (3,) float64, metres."""

    name: str
    lo: np.ndarray
    hi: np.ndarray

    def corners(self) -> np.ndarray:
        """(8, 3) float64 corner points."""
        return np.array([[x, y, z] for x in (self.lo[0], self.hi[0])
                         for y in (self.lo[1], self.hi[1])
                         for z in (self.lo[2], self.hi[2])])


@dataclass(frozen=True)
class Face:
    """Textured axis-aligned rectangle facing ``sign * e_axis``.

    ``lo``/``hi``: (3,) rectangle bounds (equal on ``axis``). ``origin``,
    ``u_axis``, ``v_axis``: (3,) texture frame, see the module docstring.
    ``texture``: (h, w, 3) uint8, shading and colour variation baked in.
    """

    name: str
    axis: int
    sign: int
    lo: np.ndarray
    hi: np.ndarray
    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    texture: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return self.sign * np.eye(3)[self.axis]

    def corners(self) -> np.ndarray:
        """(4, 3) float64 rectangle corners."""
        o, u, v = self.origin, self.u_axis, self.v_axis
        return np.array([o, o + u, o + u + v, o + v])

    def point(self, u: float, v: float) -> np.ndarray:
        """(3,) world point at texture coordinates (u, v)."""
        return self.origin + u * self.u_axis + v * self.v_axis

    def uv(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Texture coordinates of (N, 3) points lying on the face."""
        d = points - self.origin.astype(points.dtype)
        return (d @ (self.u_axis / (self.u_axis @ self.u_axis)).astype(points.dtype),
                d @ (self.v_axis / (self.v_axis @ self.v_axis)).astype(points.dtype))

    def hit(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter t of the hits of rays ``origin + t * dirs``.

        ``dirs``: (..., 3). Returns (...) float32, inf where the ray misses.
        Only front-side hits count, so call it for visible faces only.
        """
        a = self.axis
        b, c = [k for k in range(3) if k != a]
        # Python floats keep float32 ray arrays in float32 (NEP 50).
        o, lo, hi = (np.asarray(x, float).tolist() for x in (origin, self.lo, self.hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (lo[a] - o[a]) / dirs[..., a]
        pb = o[b] + t * dirs[..., b]
        pc = o[c] + t * dirs[..., c]
        inside = (t > 0) & (pb >= lo[b]) & (pb <= hi[b]) & (pc >= lo[c]) & (pc <= hi[c])
        return np.where(inside, t, np.float32(np.inf)).astype(np.float32, copy=False)

    def faces_towards(self, point: np.ndarray) -> bool:
        """Whether ``point`` is on the outer side of the face plane."""
        return self.sign * (point[self.axis] - self.lo[self.axis]) > 0


@dataclass(frozen=True)
class Landmark:
    """The scene geometry: boxes standing on a textured ground square."""

    boxes: list[Box]
    faces: list[Face]  # the ground is the last face

    @property
    def building(self) -> Box:
        return self.boxes[0]

    def corners(self) -> np.ndarray:
        """(8 * n_boxes, 3) float64 corners of all boxes (ground excluded)."""
        return np.concatenate([b.corners() for b in self.boxes])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) (3,) bounds of all boxes (ground excluded)."""
        c = self.corners()
        return c.min(0), c.max(0)

    def trace(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hits of rays ``origin + t * dirs`` from one (3,) origin.

        Returns ``t`` (N,) float32 (inf on a miss) and ``face`` (N,) int
        index into ``faces`` (-1 on a miss).
        """
        dirs = np.asarray(dirs, np.float32).reshape(-1, 3)
        best_t = np.full(len(dirs), np.inf, np.float32)
        best_f = np.full(len(dirs), -1, np.int64)
        for k, face in enumerate(self.faces):
            if face.faces_towards(origin):
                t = face.hit(origin, dirs)
                closer = t < best_t
                best_t[closer], best_f[closer] = t[closer], k
        return best_t, best_f


@dataclass
class SyntheticScene:
    """Rendered views with exact cameras (see the module docstring).

    ``images``: (H, W, 3) uint8 each; ``names``: e.g. "img_000.jpg";
    ``intrinsics``: (fx, fy, cx, cy, width, height) PINHOLE;
    ``cam_from_world``: (R (3, 3) float64, t (3,) float64).
    """

    images: list[np.ndarray]
    names: list[str]
    intrinsics: list[tuple[float, float, float, float, int, int]]
    cam_from_world: list[tuple[np.ndarray, np.ndarray]]
    landmark: Landmark


# ---------------------------------------------------------------- textures

def _crop_to_aspect(photo: np.ndarray, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """Largest random crop with width / height == aspect."""
    h, w = photo.shape[:2]
    ch, cw = (h, min(w, round(h * aspect))) if w / h > aspect else (min(h, round(w / aspect)), w)
    r, c = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return photo[r:r + ch, c:c + cw]


def _source(photos: Sequence[np.ndarray], k: int, aspect: float, shade: float,
            rng: np.random.Generator) -> np.ndarray:
    """k-th distinct texture: photo k % n, in variant (k // n) % 4.

    Mirroring and inverting change SIFT descriptors, so a photo reused in a
    different variant does not create false matches between faces.
    """
    n = len(photos)
    variant = (k // n) % 4
    img = _crop_to_aspect(photos[k % n], aspect, rng).astype(np.float32)
    if variant & 1:
        img = img[:, ::-1]
    if variant & 2:
        img = 255.0 - img
    # Stretch contrast so dull photos still give plenty of features.
    lo, hi = np.percentile(img.mean(-1), (1, 99))
    img = 20.0 + 215.0 * (img - lo) / max(hi - lo, 1.0)
    gain = shade * (1.0 + rng.normal(0.0, 0.06, 3))  # mild per-face tint
    return np.clip(img * gain, 0, 255).round().astype(np.uint8)


def _ground_texture(photos, first_source: int, rng) -> np.ndarray:
    """(T*px, T*px, 3) uint8 mosaic of distinct photo variants.

    Photo tiles are magnified on the ground, so random blob noise (unique,
    never tiled) is mixed in to give close-up views detail to match.
    """
    shade = _shade(np.eye(3)[2])
    rows = []
    for r in range(GROUND_TILES):
        row = []
        for c in range(GROUND_TILES):
            tile = _source(photos, first_source + r * GROUND_TILES + c, 1.0, shade, rng)
            zoom = GROUND_TILE_PX / tile.shape[0]
            row.append(ndimage.zoom(tile, (zoom, zoom, 1), order=1)[:GROUND_TILE_PX, :GROUND_TILE_PX])
        rows.append(np.concatenate(row, 1))
    mosaic = np.concatenate(rows, 0).astype(np.float32)
    noise = sum(ndimage.gaussian_filter(rng.standard_normal(mosaic.shape[:2], np.float32), s) * s
                for s in (1.0, 3.0))
    noise /= noise.std()
    return np.clip(mosaic * (1.0 + 0.25 * noise[..., None]), 0, 255).round().astype(np.uint8)


# ---------------------------------------------------------------- geometry

def _shade(normal: np.ndarray) -> float:
    """Brightness of a flat surface under the fixed sun."""
    return 0.55 + 0.45 * max(0.0, float(SUN @ normal))


def _box_faces(box: Box):
    """(name, axis, sign, lo, hi, origin, u_axis, v_axis) of the walls and roof."""
    ez = np.eye(3)[2]
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1), (2, 1)):
        n = sign * np.eye(3)[axis]
        right, down = (np.eye(3)[0], -np.eye(3)[1]) if axis == 2 else (np.cross(ez, n), -ez)
        lo, hi = box.lo.copy(), box.hi.copy()
        lo[axis] = hi[axis] = box.hi[axis] if sign > 0 else box.lo[axis]
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        # Texture origin is the top-left corner seen from outside.
        origin = corners[np.lexsort((corners @ down, corners @ right))[0]]
        extent = hi - lo
        yield (f"{box.name}_{'xyz'[axis]}{'+' if sign > 0 else '-'}", axis, sign, lo, hi, origin,
               right * (np.abs(right) @ extent), down * (np.abs(down) @ extent))


def build_landmark(textures: Sequence[np.ndarray], seed: int = 0, symmetric: bool = False) -> Landmark:
    """Landmark with faces textured from ``textures`` ((h, w, 3) uint8 each).

    Every face and ground tile gets a different photo or photo variant as
    long as ``4 * len(textures)`` suffice; beyond that, variants repeat with
    new random crops. ``symmetric``: SYMMETRIC_BOXES, each wall textured as its
    twin half a turn away (the same texture, shaded as the twin is).
    """
    if not textures:
        raise ValueError("need at least one texture")
    rng = np.random.default_rng(seed)
    boxes = [Box(name, np.array(lo, float), np.array(hi, float))
             for name, lo, hi in (SYMMETRIC_BOXES if symmetric else BOXES)]
    faces = []
    for box in boxes:
        for name, axis, sign, lo, hi, origin, u_axis, v_axis in _box_faces(box):
            # Skip walls buried inside a neighbouring box (annex against main).
            if any(np.all(lo >= o.lo) and np.all(hi <= o.hi) for o in boxes if o is not box):
                continue
            aspect = np.linalg.norm(u_axis) / np.linalg.norm(v_axis)
            texture = _source(textures, len(faces), aspect, _shade(sign * np.eye(3)[axis]), rng)
            if symmetric and axis != 2:
                twin = f"{_TWIN_BOX[box.name]}_{'xyz'[axis]}{'-' if sign > 0 else '+'}"
                texture = next((f.texture for f in faces if f.name == twin), texture)
            faces.append(Face(name, axis, sign, lo, hi, origin, u_axis, v_axis, texture))
    g = GROUND_HALF_SIZE
    faces.append(Face("ground", 2, 1, np.array([-g, -g, 0.0]), np.array([g, g, 0.0]),
                      np.array([-g, g, 0.0]), np.array([2 * g, 0, 0.0]), np.array([0, -2 * g, 0.0]),
                      _ground_texture(textures, len(faces), rng)))
    return Landmark(boxes, faces)


# ---------------------------------------------------------------- cameras

def look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world (R, t) of a zero-roll camera at ``centre`` facing ``target``."""
    fwd = target - centre
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(fwd, right), fwd])  # rows: x right, y down, z forward
    return R, -R @ centre


def _smooth_random(rng, n: int, lo: float, hi: float, n_knots: int = 6) -> np.ndarray:
    """n values in [lo, hi] varying slowly along the sequence (periodic)."""
    knots = rng.uniform(lo, hi, n_knots + 1)
    knots[-1] = knots[0]
    return np.interp(np.linspace(0, n_knots, n, endpoint=False), np.arange(n_knots + 1), knots)


def ring_cameras(
    landmark: Landmark,
    n_cameras: int = 30,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] = (640, 480),
    hfov_deg: float | Sequence[float] = 58.0,
    seed: int = 0,
    arc_deg: float = 300.0,
    distance_factor: tuple[float, float] = (1.6, 2.5),
    height_range: tuple[float, float] = (1.6, 12.0),
    target_jitter: float = 0.8,
) -> tuple[list[tuple[float, float, float, float, int, int]], list[tuple[np.ndarray, np.ndarray]]]:
    """Cameras on an arc around the main building, ordered by azimuth.

    ``image_size`` is (width, height), either one for all cameras or one per
    camera; ``hfov_deg`` likewise (horizontal field of view). Distances are
    ``distance_factor`` times the building's horizontal size; distance and
    height vary slowly along the arc so consecutive views overlap strongly.
    Returns (intrinsics, cam_from_world) lists, see the module docstring.
    """
    rng = np.random.default_rng(seed)
    sizes = [tuple(image_size)] * n_cameras if np.ndim(image_size[0]) == 0 else list(image_size)
    hfovs = np.broadcast_to(np.asarray(hfov_deg, float), (n_cameras,))
    if len(sizes) != n_cameras:
        raise ValueError("need one image size per camera")
    centre, size = _aim(landmark)
    full = arc_deg >= 360.0
    step = np.radians(arc_deg) / (n_cameras if full else max(n_cameras - 1, 1))
    azimuth = rng.uniform(0, 2 * np.pi) + step * (np.arange(n_cameras) + rng.uniform(-0.2, 0.2, n_cameras))
    dist = size * _smooth_random(rng, n_cameras, *distance_factor)
    height = _smooth_random(rng, n_cameras, *height_range)
    return _place_cameras(centre, azimuth, dist, height, hfovs, sizes, target_jitter, rng)


def _aim(landmark: Landmark) -> tuple[np.ndarray, float]:
    """The point cameras look at (the building's centre, 40 % up) and the building's horizontal size."""
    b = landmark.building
    return np.array([*(b.lo[:2] + b.hi[:2]) / 2, 0.4 * b.hi[2]]), float(max(b.hi[:2] - b.lo[:2]))


def focal_for_hfov(width: float, hfov_deg: float) -> float:
    """Focal length in pixels of a pinhole camera `width` pixels wide seeing `hfov_deg` degrees across."""
    return width / 2 / np.tan(np.radians(hfov_deg) / 2)


def _place_cameras(centre: np.ndarray, azimuth, distance, height, hfov_deg, sizes, target_jitter: float,
                   rng: np.random.Generator) -> tuple[list, list]:
    """(intrinsics, cam_from_world) of cameras at (azimuth, distance, height) around centre,
    each looking at centre moved by N(0, target_jitter) per axis."""
    intrinsics, poses = [], []
    for k in range(len(sizes)):
        w, h = sizes[k]
        f = focal_for_hfov(w, hfov_deg[k])
        intrinsics.append((float(f), float(f), w / 2, h / 2, int(w), int(h)))
        camera = np.array([centre[0] + distance[k] * np.cos(azimuth[k]),
                           centre[1] + distance[k] * np.sin(azimuth[k]), height[k]])
        poses.append(look_at(camera, centre + rng.normal(0.0, target_jitter, 3)))
    return intrinsics, poses


# ---------------------------------------------------------------- rendering

def _bilinear(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) float32 samples of (h, w, 3) ``texture`` at (N,) u, v."""
    h, w = texture.shape[:2]
    x = np.clip(u * w - 0.5, 0, w - 1).astype(np.float32)
    y = np.clip(v * h - 0.5, 0, h - 1).astype(np.float32)
    x0 = np.minimum(x.astype(np.int32), max(w - 2, 0))
    y0 = np.minimum(y.astype(np.int32), max(h - 2, 0))
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    # Gather uint8 texels through flat indices and convert only those: cheaper
    # than converting a whole texture or indexing with (row, col) pairs.
    flat = texture.reshape(-1, 3)
    tl, tr = flat[y0 * w + x0].astype(np.float32), flat[y0 * w + x1].astype(np.float32)
    bl, br = flat[y1 * w + x0].astype(np.float32), flat[y1 * w + x1].astype(np.float32)
    top = tl + (tr - tl) * fx
    bottom = bl + (br - bl) * fx
    return top + (bottom - top) * fy


def _footprint(face: Face, K: np.ndarray, R, t, shape, ss: int) -> tuple[slice, slice]:
    """Sample-grid window that contains the face's projection."""
    cam = face.corners() @ R.T + t
    if np.any(cam[:, 2] <= 1e-6):  # crosses the image plane: use the whole image
        return slice(0, shape[0]), slice(0, shape[1])
    uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    c0, r0 = np.floor(uv.min(0) * ss).astype(int) - 1
    c1, r1 = np.ceil(uv.max(0) * ss).astype(int) + 1
    return slice(max(r0, 0), max(min(r1, shape[0]), 0)), slice(max(c0, 0), max(min(c1, shape[1]), 0))


def render_view(landmark: Landmark, intrinsics, cam_from_world, supersample: int = 2) -> np.ndarray:
    """Render one view; returns (height, width, 3) uint8.

    ``intrinsics`` (fx, fy, cx, cy, width, height) and ``cam_from_world``
    (R, t) follow the module docstring. Each pixel averages
    ``supersample**2`` rays spread evenly over its area.
    """
    fx, fy, cx, cy, w, h = intrinsics
    R, t = (np.asarray(a, np.float64) for a in cam_from_world)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    ss = supersample
    centre = (-R.T @ t).astype(np.float32)
    # Camera-frame rays with z = 1, so the ray parameter t is the depth.
    xs = ((np.arange(w * ss) + 0.5) / ss - cx) / fx
    ys = ((np.arange(h * ss) + 0.5) / ss - cy) / fy
    dirs = np.empty((h * ss, w * ss, 3), np.float32)
    dirs[..., 0], dirs[..., 1], dirs[..., 2] = xs[None, :], ys[:, None], 1.0
    dirs = dirs @ R.astype(np.float32)  # rows @ R == (R.T @ d) per ray: world directions
    depth = np.full(dirs.shape[:2], np.inf, np.float32)
    face_id = np.full(dirs.shape[:2], -1, np.int16)
    windows = {}
    for k, face in enumerate(landmark.faces):
        if not face.faces_towards(centre):
            continue
        win = windows[k] = _footprint(face, K, R, t, depth.shape, ss)
        tk = face.hit(centre, dirs[win])
        closer = tk < depth[win]
        depth[win][closer] = tk[closer]
        face_id[win][closer] = k

    elevation = dirs[..., 2] / np.linalg.norm(dirs, axis=-1)
    sky = np.sqrt(np.clip(elevation, 0, 1))[..., None]
    haze = np.clip(-elevation * 8, 0, 1)[..., None]  # smooth fade into the haze band
    color = np.where(elevation[..., None] >= 0,
                     SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * sky,
                     SKY_HORIZON + (HAZE - SKY_HORIZON) * haze).astype(np.float32)
    for k, win in windows.items():
        mask = face_id[win] == k
        if not mask.any():
            continue
        points = centre + depth[win][mask][:, None] * dirs[win][mask]
        u, v = landmark.faces[k].uv(points)
        color[win][mask] = _bilinear(landmark.faces[k].texture, u, v)
    img = color.reshape(h, ss, w, ss, 3).mean((1, 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_scene(
    textures: Sequence[np.ndarray],
    n_cameras: int = 30,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] = (640, 480),
    hfov_deg: float | Sequence[float] = 58.0,
    seed: int = 0,
    arc_deg: float = 300.0,
    supersample: int = 2,
) -> SyntheticScene:
    """Build the landmark, place ``n_cameras`` cameras on an arc and render.

    ``textures``: photos, (h, w, 3) uint8. ``image_size``: (width, height),
    one for all or one per camera; ``hfov_deg``: one or one per camera.
    Deterministic for a given ``seed``.
    """
    seeds = np.random.SeedSequence(seed).generate_state(2)
    landmark = build_landmark(textures, seed=int(seeds[0]))
    intrinsics, poses = ring_cameras(landmark, n_cameras, image_size, hfov_deg,
                                     seed=int(seeds[1]), arc_deg=arc_deg)
    images = [render_view(landmark, K, pose, supersample) for K, pose in zip(intrinsics, poses)]
    names = [f"img_{k:03d}.jpg" for k in range(n_cameras)]
    return SyntheticScene(images, names, intrinsics, poses, landmark)


# ---------------------------------------------------------------- collections

# Image sizes (width, height) of a collection's cameras: landscape and portrait, as people's
# photos come. Their long side stays at most 1024 px, the size features are computed at.
COLLECTION_IMAGE_SIZES = ((640, 480), (800, 600), (480, 640), (720, 540), (960, 720), (768, 1024))


@dataclass(frozen=True)
class CollectionCameras:
    """Where a collection's photos were taken from, drawn around a landmark.

    distance_factor: camera distance from the building's centre in units of its horizontal
    size; height_range: camera height in metres; hfov_deg: horizontal field of view range.
    """

    distance_factor: tuple[float, float] = (1.3, 3.2)
    height_range: tuple[float, float] = (1.5, 14.0)
    hfov_deg: tuple[float, float] = (42.0, 72.0)
    image_sizes: tuple[tuple[int, int], ...] = COLLECTION_IMAGE_SIZES
    target_jitter: float = 1.5  # metres: what a photo is centred on varies around the building


def collection_cameras(landmark: Landmark, n_cameras: int, seed: int = 0,
                       spec: CollectionCameras = CollectionCameras()) -> tuple[list, list]:
    """n_cameras cameras all around the landmark, in the order of their azimuth.

    Unlike ring_cameras (a smooth path), each camera draws its own distance, height, field
    of view and image size: neighbours in azimuth may see the building at different scales,
    as in a collection of photos by many people. Returns (intrinsics, cam_from_world) lists,
    see the module docstring.
    """
    rng = np.random.default_rng(seed)
    centre, size = _aim(landmark)
    azimuth = np.sort(rng.uniform(0, 2 * np.pi, n_cameras))
    distance = size * rng.uniform(*spec.distance_factor, n_cameras)
    height = rng.uniform(*spec.height_range, n_cameras)
    hfov = rng.uniform(*spec.hfov_deg, n_cameras)
    sizes = [spec.image_sizes[k] for k in rng.integers(0, len(spec.image_sizes), n_cameras)]
    return _place_cameras(centre, azimuth, distance, height, hfov, sizes, spec.target_jitter, rng)


# `synth --one-camera`: every photo taken with one camera (one size, one field of view), as a
# control for the tests of which photos share a camera.
ONE_CAMERA = CollectionCameras(hfov_deg=(55.0, 55.0), image_sizes=((800, 600),))

# Nuisances of real collections that `synth --nuisances` can add (see flows/synth.py).
NUISANCES = ("no-exif", "crops", "symmetric", "zoom", "night")
# Fraction of the frame's width that a cropped photo keeps: its EXIF focal length, read as if
# it were the full frame, is this fraction of the true one.
CROP_KEPT = (0.56, 0.95)


def cropped_camera(intrinsics: tuple, rng: np.random.Generator) -> tuple[tuple, float]:
    """A photo cropped after the shot (a window of the frame, same aspect, anywhere in it)
    and resized back to the frame's size.

    intrinsics: (fx, fy, cx, cy, w, h), COLMAP pixel convention. Returns the intrinsics of
    the stored photo (focal lengths scaled by 1 / kept, principal point moved with the
    window) and the fraction kept: the camera's EXIF, written for the full frame, then gives
    a focal length of kept x the true one at the stored size."""
    fx, fy, cx, cy, w, h = intrinsics
    kept = float(rng.uniform(*CROP_KEPT))
    # The window's top-left corner in frame pixels; the stored photo scales it by 1 / kept.
    x0, y0 = rng.uniform(0, (1 - kept) * w), rng.uniform(0, (1 - kept) * h)
    return (fx / kept, fy / kept, (cx - x0) / kept, (cy - y0) / kept, w, h), kept


# `synth --nuisances zoom`: this share of the photos are details (a carving, a window) shot with a long
# lens from where the photographer stood, this many degrees across.
ZOOM_SHARE = 0.25
ZOOM_HFOV_DEG = (8.0, 20.0)
_ZOOM_CANDIDATES = 64  # aim points tried at once; some are hidden behind other boxes
_ZOOM_MIN_COSINE = 0.3  # prefer walls seen less than ~72 degrees off their normal: no slivers of wall
_ZOOM_FRAME_GRID = (0.05, 0.5, 0.95)  # where, across the frame's width and height, rays check what it shows


def facing_walls(landmark: Landmark, point: np.ndarray) -> list[int]:
    """Indices into ``landmark.faces`` of the building's walls (its roof excluded) whose outer
    side faces ``point`` ((3,) world, metres)."""
    building = landmark.building.name
    return [k for k, face in enumerate(landmark.faces[:-1])
            if face.name.rsplit("_", 1)[0] == building and face.axis != 2 and face.faces_towards(point)]


def _wall_share(landmark: Landmark, walls: list[int], centre: np.ndarray, target: np.ndarray,
                focal: float, size: tuple[int, int]) -> float:
    """Share of a 3 x 3 grid of rays across the frame of a camera at ``centre`` looking at
    ``target`` (focal length ``focal`` px, ``size`` (w, h)) whose first hit is one of ``walls``."""
    w, h = size
    x, y = np.meshgrid((np.array(_ZOOM_FRAME_GRID) - 0.5) * w / focal, (np.array(_ZOOM_FRAME_GRID) - 0.5) * h / focal)
    R, _ = look_at(centre, target)
    _, hit = landmark.trace(centre, np.stack([x.ravel(), y.ravel(), np.ones(x.size)], 1) @ R)
    return float(np.isin(hit, walls).mean())


def _zoom_target(landmark: Landmark, centre: np.ndarray, focal: float, size: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """(3,) random point on a wall of the building facing ``centre`` that ``centre`` sees.

    Draws candidates on the facing walls. Among those nothing hides and that are seen well off
    grazing (else those nothing hides, else all), takes the first around which the walls fill the
    whole frame of focal length ``focal`` px and ``size`` (w, h), else the one they fill most."""
    walls = facing_walls(landmark, centre)
    faces = rng.choice(walls, _ZOOM_CANDIDATES)
    uv = rng.uniform(0.0, 1.0, (_ZOOM_CANDIDATES, 2))
    points = np.array([landmark.faces[k].point(u, v) for k, (u, v) in zip(faces, uv)])
    rays = points - centre
    _, hit = landmark.trace(centre, rays)
    seen = hit == faces  # the first surface on the way is the wall itself
    normals = np.array([landmark.faces[k].normal for k in faces])
    cosine = -np.sum(rays * normals, 1) / np.linalg.norm(rays, axis=1)
    usable = next((u for u in (seen & (cosine > _ZOOM_MIN_COSINE), seen) if u.any()), np.ones(len(faces), bool))
    best, best_share = None, -1.0
    for point in points[usable]:
        share = _wall_share(landmark, walls, centre, point, focal, size)
        if share == 1.0:
            return point
        if share > best_share:
            best, best_share = point, share
    return best


def zoomed_camera(landmark: Landmark, intrinsics: tuple, cam_from_world: tuple,
                  rng: np.random.Generator) -> tuple[tuple, tuple]:
    """A detail of the building shot with a long lens from where a collection camera stands.

    intrinsics: (fx, fy, cx, cy, w, h) PINHOLE; cam_from_world: (R (3, 3), t (3,)) with
    x_cam = R @ x_world + t (see the module docstring). Keeps the camera's centre and image size;
    draws a horizontal field of view in ZOOM_HFOV_DEG and aims, with zero roll (look_at), at a
    random point of a wall of ``landmark.building`` (not its roof) whose outer side faces the
    camera and that nothing hides from it, preferring points around which the building's walls
    fill the frame. Returns the zoomed camera's (intrinsics, cam_from_world), principal point at
    the image centre.
    """
    R, t = (np.asarray(a, float) for a in cam_from_world)
    centre = -R.T @ t
    w, h = intrinsics[4:]
    f = float(focal_for_hfov(w, rng.uniform(*ZOOM_HFOV_DEG)))
    pose = look_at(centre, _zoom_target(landmark, centre, f, (w, h), rng))
    return (f, f, w / 2, h / 2, int(w), int(h)), pose


# `synth --nuisances night`: this share of the photos are taken at night, under street lamps.
NIGHT_SHARE = 0.2
NIGHT_GAIN = (0.06, 0.25)  # exposure relative to the day
NIGHT_GAMMA = (1.2, 1.6)  # > 1: shadows sink faster than highlights
NIGHT_NOISE_GREY = (1.5, 4.0)  # sensor noise, standard deviation in grey levels
SODIUM_TINT = np.array([1.0, 0.72, 0.4], np.float32)  # the orange of sodium street lamps, per RGB channel


def night_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A night-time copy of a day photo: (H, W, 3) uint8 in and out, same pixels, same camera.

    Darkens (a gain in NIGHT_GAIN after a gamma in NIGHT_GAMMA, which crushes the shadows), tints
    the light as sodium lamps do (SODIUM_TINT) and adds Gaussian sensor noise of NIGHT_NOISE_GREY
    grey levels. Deterministic for the state of ``rng``.
    """
    gain, gamma, noise = (rng.uniform(*r) for r in (NIGHT_GAIN, NIGHT_GAMMA, NIGHT_NOISE_GREY))
    dark = 255.0 * np.float32(gain) * (image.astype(np.float32) / 255.0) ** np.float32(gamma) * SODIUM_TINT
    dark += np.float32(noise) * rng.standard_normal(image.shape, np.float32)
    return np.clip(dark + 0.5, 0, 255).astype(np.uint8)


def render_distractor(size: tuple[int, int], seed: int) -> np.ndarray:
    """(height, width, 3) uint8: a photo of nothing in the scene, unlike every other distractor.

    Coloured noise at several scales under a few random discs and bars: plenty of features,
    none of them shared with the landmark or with another seed's image.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for sigma in (1.5, 4.0, 12.0):
        layer = ndimage.gaussian_filter(rng.standard_normal((h, w, 3)).astype(np.float32), (sigma, sigma, 0))
        img += layer / max(float(layer.std()), 1e-6)
    img = 128 + 35 * img
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(4, 9)):
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            r0, c0, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.25) * min(w, h)
            mask = (rows - r0) ** 2 + (cols - c0) ** 2 < radius ** 2
        else:
            r0, c0 = rng.integers(0, h), rng.integers(0, w)
            mask = (rows >= r0) & (rows < r0 + rng.integers(h // 20, h // 3)) \
                & (cols >= c0) & (cols < c0 + rng.integers(w // 20, w // 2))
        img[mask] = 0.6 * colour + 0.4 * img[mask]
    return np.clip(img, 0, 255).round().astype(np.uint8)
