"""``edgead synth``: a synthetic benchmark of industrial parts with surface defects, in the Real3D-AD layout.

Each category is a parametric part with real dimensions in millimetres (hex bolt, spur gear, L-bracket, pipe
elbow, bottle, box housing), built from surfaces (triangle meshes and planar faces with holes) that are sampled
uniformly by area. For every category the generator writes::

    OUT/<category>/train/000_template.pcd ...   4 full 360-degree scans of good parts
    OUT/<category>/test/NNN_good.pcd            good parts
    OUT/<category>/test/NNN_<defect>.pcd        defective parts (bulge, sink, scratch, blob, pit)
    OUT/<category>/gt/NNN_<defect>.txt          ``x y z label`` per point of the defective scan (label 1 = defect)
    OUT/synth.json                              the generation parameters and per-sample defect descriptions

Every scan gets sensor noise (Gaussian, 0.06-0.12 % of the part size) and a few flying-pixel outliers, a small pose
change (1-5 degrees, +-3 mm) and an arbitrary offset into a sensor frame (hundreds of mm, different per scan).
With ``--track scan`` the test scans are one-sided views: only the points a depth camera above the part would see
(back faces culled, occlusion by a z-buffer); training scans stay full.

Output is a pure function of the options: one seed gives the same bytes on every run, whatever ``--workers``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_closing, minimum_filter

from edgead.formats.pointcloud import write_pcd
from edgead.ops import axis_angle

TRAIN_POINTS = 50_000  # default points per training scan; test scans get TEST_FRACTION of it
TEST_FRACTION = 0.6
DEFECT_TYPES = ("bulge", "sink", "scratch", "blob", "pit")
TRACKS = ("full", "scan", "real")
REAL_DEPTHS = (0.007, 0.015)  # real track: defect depth as a fraction of the part's size (Real3D-AD's range)

# ------------------------------------------------------------------------------------------- surfaces and sampling


@dataclass
class Mesh:
    """Triangle mesh: vertices (V, 3), faces (F, 3). Face normals follow the right-hand rule."""

    v: np.ndarray
    f: np.ndarray

    def __post_init__(self):
        a, b, c = (self.v[self.f[:, i]] for i in range(3))
        cr = np.cross(b - a, c - a)
        self.areas = 0.5 * np.linalg.norm(cr, axis=1)
        keep = self.areas > 1e-12
        self.f, self.areas = self.f[keep], self.areas[keep]
        self.normals = cr[keep] / (2 * self.areas[:, None])
        self.area = float(self.areas.sum())

    def transform(self, r: np.ndarray, t) -> Mesh:
        return Mesh(self.v @ r.T + np.asarray(t, float), self.f)

    def flipped(self) -> Mesh:
        return Mesh(self.v, self.f[:, ::-1].copy())

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cdf = np.cumsum(self.areas)
        tri = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)
        u, w = rng.random(n), rng.random(n)
        su = np.sqrt(u)
        b0, b1, b2 = 1 - su, su * (1 - w), su * w
        f = self.f[tri]
        p = b0[:, None] * self.v[f[:, 0]] + b1[:, None] * self.v[f[:, 1]] + b2[:, None] * self.v[f[:, 2]]
        return p, self.normals[tri]


def _poly_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _inside(poly: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test. poly (K, 2), q (M, 2) -> (M,) bool."""
    inside = np.zeros(len(q), dtype=bool)
    x, y = q[:, 0], q[:, 1]
    xj, yj = poly[-1]
    for xi, yi in poly:
        cond = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= cond & (x < xc)
        xj, yj = xi, yi
    return inside


@dataclass
class Planar:
    """A planar face: ``origin + a * e1 + b * e2`` for (a, b) inside ``outer`` and outside every hole.

    The normal is ``e1 x e2``. Holes must lie inside the outer polygon and not overlap.
    """

    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    outer: np.ndarray
    holes: list = field(default_factory=list)

    def __post_init__(self):
        self.origin, self.e1, self.e2 = (np.asarray(a, float) for a in (self.origin, self.e1, self.e2))
        self.normal = np.cross(self.e1, self.e2)
        self.area = abs(_poly_area(self.outer)) - sum(abs(_poly_area(h)) for h in self.holes)
        self._lo, self._hi = self.outer.min(0), self.outer.max(0)

    def transform(self, r: np.ndarray, t) -> Planar:
        return Planar(r @ self.origin + np.asarray(t, float), r @ self.e1, r @ self.e2, self.outer, self.holes)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        box = float(np.prod(self._hi - self._lo))
        got, total = [np.zeros((0, 2))], 0
        while total < n:
            m = int((n - total) * box / max(self.area, 1e-9) * 1.1) + 16
            ab = self._lo + rng.random((m, 2)) * (self._hi - self._lo)
            ok = _inside(self.outer, ab)
            for h in self.holes:
                ok &= ~_inside(h, ab)
            got.append(ab[ok])
            total += int(ok.sum())
        ab = np.concatenate(got)[:n]
        p = self.origin + ab[:, :1] * self.e1 + ab[:, 1:] * self.e2
        return p, np.broadcast_to(self.normal, p.shape).copy()


def sample_surfaces(surfaces: list, rng: np.random.Generator, n: int):
    """Sample ``n`` points uniformly by area over all surfaces: points (n, 3), normals (n, 3)."""
    areas = np.array([s.area for s in surfaces])
    counts = rng.multinomial(n, areas / areas.sum())
    pts, nrm = zip(*(s.sample(rng, int(c)) for s, c in zip(surfaces, counts, strict=True)), strict=True)
    return np.concatenate(pts), np.concatenate(nrm)


# ----------------------------------------------------------------------------------------- geometry construction


def grid_mesh(p: np.ndarray) -> Mesh:
    """Mesh a (nu, nv, 3) grid of vertices; face normals point along dP/du x dP/dv."""
    nu, nv = p.shape[:2]
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return Mesh(p.reshape(-1, 3).astype(float), f)


def revolve(profile, n: int = 144, radius_fn=None) -> Mesh:
    """Surface of revolution about z of an (r, z) polyline. A profile running counter-clockwise in the (r, z)
    half-plane (out along the bottom, up the outside, in along the top) gets outward normals.
    ``radius_fn(theta (n+1, 1), z (1, K)) -> scale`` deforms the radius (e.g. a flat panel)."""
    prof = np.asarray(profile, float)
    th = np.linspace(0, 2 * np.pi, n + 1)[:, None]
    r, z = prof[None, :, 0], prof[None, :, 1]
    if radius_fn is not None:
        r = r * radius_fn(th, z)
    p = np.stack(np.broadcast_arrays(r * np.cos(th), r * np.sin(th), z + 0 * th), -1)
    return grid_mesh(p)


def prism_walls(poly, z0: float, z1: float, inward: bool = False) -> Mesh:
    """Side walls of a counter-clockwise polygon extruded from z0 to z1; outward normals unless ``inward``."""
    poly = np.asarray(poly, float)
    closed = np.vstack([poly, poly[:1]])
    zs = np.array([z0, z1])
    p = np.stack(np.broadcast_arrays(closed[:, None, 0], closed[:, None, 1], zs[None, :]), -1)
    m = grid_mesh(p)
    return m.flipped() if inward else m


def circle(cx: float, cy: float, r: float, n: int = 64) -> np.ndarray:
    """Counter-clockwise polygon approximating a circle: (n, 2)."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def stadium(cx: float, cy: float, length: float, width: float, n: int = 24) -> np.ndarray:
    """Slot along x: a rectangle of ``length`` with round ends of diameter ``width``. Counter-clockwise."""
    r, h = width / 2, length / 2 - width / 2
    a1 = np.linspace(-np.pi / 2, np.pi / 2, n)
    a2 = np.linspace(np.pi / 2, 3 * np.pi / 2, n)
    right = np.stack([cx + h + r * np.cos(a1), cy + r * np.sin(a1)], 1)
    left = np.stack([cx - h + r * np.cos(a2), cy + r * np.sin(a2)], 1)
    return np.vstack([right, left])


X, Y, Z = np.eye(3)
_CYCLE = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)  # local (a, b, c) -> world (c, a, b); a rotation


def cap(outer, z: float, up: bool, holes=()) -> Planar:
    """Horizontal face at height z with (x, y) polygons; normal +z if ``up`` else -z."""
    if up:
        return Planar(np.array([0, 0, z]), X, Y, np.asarray(outer, float), [np.asarray(h, float) for h in holes])
    sw = [np.asarray(h, float)[:, ::-1] for h in holes]
    return Planar(np.array([0, 0, z]), Y, X, np.asarray(outer, float)[:, ::-1], sw)


# ------------------------------------------------------------------------------------------------------ the parts


def hex_bolt() -> list:
    """M12 x 55 hex bolt: hex head (18 mm across flats, 7.5 mm) with a raised grade mark, ring-threaded shank."""
    hexa = circle(0, 0, 18 / np.sqrt(3), 6) @ axis_angle(Z, np.pi / 6)[:2, :2].T  # flats parallel to x
    mark = rect(2.0, -0.9, 6.5, 0.9)
    head_h, mark_h = 7.5, 0.5
    surf = [prism_walls(hexa, 0, head_h), cap(hexa, head_h, True, [mark]),
            cap(hexa, 0, False, [circle(0, 0, 6, 96)]),
            prism_walls(mark, head_h, head_h + mark_h), cap(mark, head_h + mark_h, True)]
    pitch, r_major, r_minor, z_end, z_thread = 1.75, 6.0, 5.05, -55.0, -25.0
    prof = [(0, z_end), (5.3, z_end), (r_major, z_end + 0.7)]
    z = z_end + 0.7
    while z + pitch <= z_thread:
        prof += [(r_minor, z + pitch / 2), (r_major, z + pitch)]
        z += pitch
    prof += [(r_major, z_thread), (r_major, 0.0)]
    surf.append(revolve(prof, 144))
    return surf


def spur_gear() -> list:
    """24-tooth module-2 spur gear, 12 mm wide, hub on one side, keyed 16 mm bore, five lightening holes."""
    teeth, r_root, r_pitch, r_tip = 24, 21.5, 24.0, 26.0
    p = 2 * np.pi / teeth
    outline = []
    for k in range(teeth):
        c = k * p
        for da, r in ((-0.5, r_root), (-0.32, r_root), (-0.25, r_pitch), (-0.14, r_tip), (0.14, r_tip),
                      (0.25, r_pitch), (0.32, r_root)):
            a = c + da * p
            outline.append((r * np.cos(a), r * np.sin(a)))
    outline = np.array(outline)
    a = np.linspace(np.arcsin(1.5 / 8), 2 * np.pi - np.arcsin(1.5 / 8), 72)  # keyed bore, counter-clockwise
    bore = np.vstack([np.stack([8 * np.cos(a), 8 * np.sin(a)], 1), [[10.5, -1.5], [10.5, 1.5]]])
    holes = [circle(16.5 * np.cos(t), 16.5 * np.sin(t), 3.0, 40) for t in np.pi / 5 + 2 * np.pi * np.arange(5) / 5]
    hub_r, width, hub_top = 12.5, 12.0, 19.0
    hub = circle(0, 0, hub_r, 96)
    surf = [prism_walls(outline, 0, width), cap(outline, 0, False, [bore] + holes),
            cap(outline, width, True, [hub] + holes), prism_walls(hub, width, hub_top),
            cap(hub, hub_top, True, [bore]), prism_walls(bore, 0, hub_top, inward=True)]
    surf += [prism_walls(h, 0, width, inward=True) for h in holes]
    return [s.transform(np.eye(3), [0, 0, -hub_top / 2]) for s in surf]


def l_bracket() -> list:
    """Angle bracket from 4 mm plate, 40 mm wide: 60 mm base with two holes, 50 mm upright with a slot."""
    t, base, up, w = 4.0, 60.0, 50.0, 40.0
    section = np.array([[0, 0], [base, 0], [base, t], [t, t], [t, up], [0, up]], float)  # (x, z), CCW
    base_holes = [circle(24, 11, 3.25, 48), circle(46, 28, 3.25, 48)]  # (x, y)
    slot = stadium(20, 33, 16, 6.5)  # (y, z)
    surf = [
        # L-shaped ends: y = 0 (normal -y) and y = w (normal +y); plane coordinates (x, z)
        Planar(np.zeros(3), X, Z, section), Planar(np.array([0, w, 0]), Z, X, section[:, ::-1]),
        cap(rect(0, 0, base, w), 0, False, base_holes),  # underside
        cap(rect(t, 0, base, w), t, True, [h for h in base_holes]),  # top of the base
        Planar(np.array([base, 0, 0]), Y, Z, rect(0, 0, w, t)),  # end of the base, +x
        Planar(np.array([t, 0, 0]), Y, Z, rect(0, t, w, up), [slot]),  # inner face of the upright, +x
        Planar(np.array([0, 0, up]), X, Y, rect(0, 0, t, w)),  # top edge of the upright, +z
        Planar(np.zeros(3), Z, Y, rect(0, 0, up, w), [slot[:, ::-1]]),  # back of the upright, -x
    ]
    surf += [prism_walls(h, 0, t, inward=True) for h in base_holes]
    # slot walls: a prism along x, built in local (a, b, c) = (y, z, x) and turned into place
    surf.append(prism_walls(slot, 0, t, inward=True).transform(_CYCLE, [0, 0, 0]))
    return [s.transform(np.eye(3), [-base / 2, -w / 2, -up / 2]) for s in surf]


def pipe_elbow() -> list:
    """90-degree elbow of 24 mm tube (2.5 mm wall), bend radius 30, a 4-bolt flange on the long leg."""
    ro, ri, rb, leg1, leg2, fl_r, fl_t = 12.0, 9.5, 30.0, 32.0, 14.0, 24.0, 5.0
    nps = 96
    psi = np.linspace(0, 2 * np.pi, nps + 1)

    def tube(centre, n1, n2, radius, inward):
        # centre (M, 3) and a right-handed frame (n1, n2, tangent) along it: points centre + r (cos n1 + sin n2).
        # With u along the centreline and v around it, the grid's normals point inward.
        c, s = np.cos(psi)[None, :, None], np.sin(psi)[None, :, None]
        m = grid_mesh(centre[:, None, :] + radius * (c * n1[:, None, :] + s * n2[:, None, :]))
        return m if inward else m.flipped()

    z0 = -leg1 + fl_t
    zs = np.linspace(z0, 0, 2)
    straight1 = np.stack([0 * zs, 0 * zs, zs], 1)
    phi = np.linspace(0, np.pi / 2, 61)
    bend = np.stack([rb - rb * np.cos(phi), 0 * phi, rb * np.sin(phi)], 1)
    bn1 = np.stack([np.cos(phi), 0 * phi, -np.sin(phi)], 1)
    xs = np.linspace(rb, rb + leg2, 2)
    straight2 = np.stack([xs, 0 * xs, rb + 0 * xs], 1)
    ey = np.tile(Y, (2, 1))
    surf = [
        tube(straight1, np.tile(X, (2, 1)), ey, ro, False),
        tube(bend, bn1, np.tile(Y, (len(phi), 1)), ro, False),
        tube(straight2, np.tile(-Z, (2, 1)), ey, ro, False),
    ]
    zi = np.linspace(-leg1, 0, 2)
    surf += [
        tube(np.stack([0 * zi, 0 * zi, zi], 1), np.tile(X, (2, 1)), ey, ri, True),
        tube(bend, bn1, np.tile(Y, (len(phi), 1)), ri, True),
        tube(straight2, np.tile(-Z, (2, 1)), ey, ri, True),
    ]
    bolt = [circle(18 * np.cos(a), 18 * np.sin(a), 2.75, 40) for a in np.pi / 4 + np.pi / 2 * np.arange(4)]
    outer = circle(0, 0, fl_r, 128)
    surf += [
        cap(outer, -leg1, False, [circle(0, 0, ri, 96)] + bolt),
        cap(outer, z0, True, [circle(0, 0, ro, 96)] + bolt),
        prism_walls(outer, -leg1, z0),
    ]
    surf += [prism_walls(h, -leg1, z0, inward=True) for h in bolt]
    # end ring of the short leg, facing +x: plane coordinates (y, z - rb)
    ring_o, ring_i = circle(0, 0, ro, 96), circle(0, 0, ri, 96)
    surf.append(Planar(np.array([rb + leg2, 0, rb]), Y, Z, ring_o, [ring_i]))
    return [s.transform(np.eye(3), [-(rb + leg2 - fl_r) / 2, 0, -(rb + ro - leg1) / 2]) for s in surf]


def bottle() -> list:
    """Closed 120 mm bottle (56 mm body) with a punted base, shoulder, two thread rings and a flat label panel."""
    prof = [(0, 4.0), (8, 3.4), (16, 1.6), (22, 0.4), (25.5, 0.0), (27.4, 0.8), (28, 3.0)]
    prof += [(28, z) for z in np.linspace(8, 84, 20)]
    a = np.linspace(0, np.pi / 2, 14)[1:]
    prof += [(11 + 17 * np.cos(t) ** 0.8, 84 + 20 * np.sin(t)) for t in a]
    prof += [(11, 106), (12, 106.6), (12, 107.6), (11, 108.2), (11, 110.5), (12, 111.1), (12, 112.1),
             (11, 112.7), (11, 116), (12.6, 116.4), (12.6, 119.4), (12, 120), (0, 120)]

    def panel(th, z):
        # flat label panel centred on theta = 0 between z = 22 and 72, blended over 6 mm
        w = np.clip((z - 16) / 6, 0, 1) * np.clip((78 - z) / 6, 0, 1)
        flat = np.minimum(1.0, 0.9 / np.maximum(np.cos(th), 1e-6))
        return 1 - w * (1 - flat)

    return [revolve(prof, 192, panel).transform(np.eye(3), [0, 0, -60])]


def box_housing() -> list:
    """80 x 56 x 32 mm housing: four screw bosses (one taller) on top, a connector pocket in one side wall."""
    lx, ly, h = 80.0, 56.0, 32.0
    x0, x1, y0, y1 = -lx / 2, lx / 2, -ly / 2, ly / 2
    bosses = [(-31, -19, 5.0, 6.0), (31, -19, 5.0, 6.0), (-31, 19, 5.0, 6.0), (22, 17, 6.5, 10.0)]
    pocket = rect(-10, 8, 10, 20)  # on the +x wall, plane coordinates (y, z)
    pd = 5.0
    surf = [
        cap(rect(x0, y0, x1, y1), 0, False),
        cap(rect(x0, y0, x1, y1), h, True, [circle(bx, by, br, 64) for bx, by, br, _ in bosses]),
        Planar(np.array([x0, y0, 0]), X, Z, rect(0, 0, lx, h)),  # -y wall
        Planar(np.array([x0, y1, 0]), Z, X, rect(0, 0, h, lx)),  # +y wall
        Planar(np.array([x0, y0, 0]), Z, Y, rect(0, 0, h, ly)),  # -x wall
        Planar(np.array([x1, 0, 0]), Y, Z, rect(y0, 0, y1, h), [pocket]),  # +x wall with the pocket
        Planar(np.array([x1 - pd, 0, 0]), Y, Z, pocket),  # pocket floor, facing +x
    ]
    # pocket side walls: prism along x from x1 - pd to x1, built along z then rotated z -> x
    surf.append(prism_walls(pocket, x1 - pd, x1, inward=True).transform(_CYCLE, [0, 0, 0]))  # (y, z, x) frame
    for bx, by, br, bh in bosses:
        hole = circle(bx, by, 1.6 if br < 6 else 2.1, 32)
        depth = 0.7 * bh
        surf += [prism_walls(circle(bx, by, br, 64), h, h + bh), cap(circle(bx, by, br, 64), h + bh, True, [hole]),
                 prism_walls(hole, h + bh - depth, h + bh, inward=True), cap(hole, h + bh - depth, True)]
    return [s.transform(np.eye(3), [0, 0, -h / 2 - 3]) for s in surf]


PARTS = {"hex_bolt": hex_bolt, "spur_gear": spur_gear, "l_bracket": l_bracket, "pipe_elbow": pipe_elbow,
         "bottle": bottle, "box_housing": box_housing}
CATEGORIES = tuple(PARTS)
DEFECT_SCALE = {"hex_bolt": 0.75}  # the bolt is long and thin: scale its defects to the shank and head


@dataclass
class Part:
    name: str
    surfaces: list
    area: float  # mm^2
    size: float  # largest bounding-box extent, mm
    defect_size: float  # the length defects scale with: ``size`` except for slender parts


@cache
def build_part(name: str) -> Part:
    if name not in PARTS:
        raise ValueError(f"unknown category {name!r}; expected one of {', '.join(CATEGORIES)}")
    surfaces = PARTS[name]()
    pts, _ = sample_surfaces(surfaces, np.random.default_rng(0), 20_000)
    ext = pts.max(0) - pts.min(0)
    return Part(name, surfaces, float(sum(s.area for s in surfaces)), float(ext.max()),
                float(ext.max()) * DEFECT_SCALE.get(name, 1.0))


# --------------------------------------------------------------------------------------------------------- defects


def _tangent(n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=3)
    t = a - n * (a @ n)
    return t / np.linalg.norm(t)


def _near(pts, nrm, c, nc, radius):
    """Points on the same sheet as c: within ``radius`` and facing the same way."""
    d = pts - c
    return (np.einsum("ij,ij->i", d, d) < radius**2) & (nrm @ nc > 0.0) & (np.abs(d @ nc) < 0.6 * radius)


def _given(drawn: float, value: float | None) -> float:
    """``value`` when given, else ``drawn``: the caller draws either way, so the random stream does not change."""
    return drawn if value is None else value


def apply_defect(kind: str, pts, nrm, ci: int, size: float, density: float, rng: np.random.Generator,
                 nominal_density: float | None = None, depth: float | None = None):
    """Put a defect of ``kind`` centred on point ``ci`` of a part of ``size`` mm sampled at ``density`` points per
    mm^2 (``nominal_density``: that of the final scan, which sets the narrowest scratch). ``depth`` (mm) sets how far
    the defect leaves the surface (a bulge's height, a sink's, scratch's or pit's depth, a blob's protrusion) instead
    of drawing it; the random draws are the same either way. Returns points, normals, labels (uint8) and a
    description (``depth``: that distance, whichever way it was set)."""
    nominal_density = nominal_density or density
    c, nc = pts[ci].copy(), nrm[ci] / np.linalg.norm(nrm[ci])
    labels = np.zeros(len(pts), np.uint8)
    desc = {"type": kind}
    if kind in ("bulge", "sink"):
        r = size * rng.uniform(0.04, 0.07)
        hgt = _given(r * rng.uniform(0.2, 0.35), depth) * (1 if kind == "bulge" else -1)
        sel = np.flatnonzero(_near(pts, nrm, c, nc, r))
        d = np.linalg.norm(pts[sel] - c, axis=1) / r
        k = (1 - d**2) ** 2
        pts = pts.copy()
        pts[sel] += (hgt * k)[:, None] * nc
        labels[sel[k > 0.05]] = 1
        desc.update(radius=r, height=hgt, depth=abs(hgt))
    elif kind == "scratch":
        length, width = size * rng.uniform(0.12, 0.22), size * rng.uniform(0.01, 0.016)
        depth = _given(width * rng.uniform(0.5, 0.8), depth)
        width = max(width, 2.5 / np.sqrt(nominal_density))  # at least a few points across at the scan's density
        t = _tangent(nc, rng)
        b = np.cross(nc, t)
        sel = np.flatnonzero(_near(pts, nrm, c, nc, length / 2 + width))
        rel = pts[sel] - c
        s, q = rel @ t, rel @ b
        prof = np.clip(1 - np.abs(2 * q / width), 0, 1) * np.clip((length / 2 - np.abs(s)) / width, 0, 1)
        pts = pts.copy()
        pts[sel] -= (depth * prof)[:, None] * nc
        labels[sel[prof > 0.05]] = 1
        desc.update(length=length, width=width, depth=depth)
    elif kind == "blob":
        rb = size * rng.uniform(0.03, 0.045)
        lift = _given(rb * rng.uniform(0.2, 0.45), None if depth is None else depth - rb)  # centre above surface
        centre = c + nc * lift
        inside = (np.linalg.norm(pts - centre, axis=1) < rb) & (nrm @ nc > 0.0)
        n_new = int(round(density * 4 * np.pi * rb * rb))
        dirs = rng.normal(size=(n_new, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        # lumpy: the radius varies smoothly with direction
        lump = 1 + 0.12 * (dirs @ _tangent(nc, rng))
        bp = centre + dirs * (rb * lump)[:, None]
        keep = (bp - c) @ nc > 0
        keep_pts = ~inside
        rim = keep_pts & (np.linalg.norm(pts - centre, axis=1) < 1.08 * rb)
        lab_old = rim[keep_pts].astype(np.uint8)
        pts = np.concatenate([pts[keep_pts], bp[keep]])
        nrm = np.concatenate([nrm[keep_pts], dirs[keep]])
        labels = np.concatenate([lab_old, np.ones(int(keep.sum()), np.uint8)])
        desc.update(radius=rb, depth=rb + lift)
    elif kind == "pit":
        rp, dp = size * rng.uniform(0.03, 0.045), _given(size * rng.uniform(0.012, 0.022), depth)
        rel = pts - c
        radial = rel - np.outer(rel @ nc, nc)
        gone = (np.linalg.norm(radial, axis=1) < rp) & (nrm @ nc > 0.0) & (np.abs(rel @ nc) < rp)
        t = _tangent(nc, rng)
        b = np.cross(nc, t)
        n_wall = int(round(density * 2 * np.pi * rp * dp))
        n_floor = int(round(density * np.pi * rp * rp))
        ang = rng.uniform(0, 2 * np.pi, n_wall)
        radial_dir = np.outer(np.cos(ang), t) + np.outer(np.sin(ang), b)
        wall = c + rp * radial_dir - np.outer(rng.uniform(0, dp, n_wall), nc)
        rr, aa = rp * np.sqrt(rng.random(n_floor)), rng.uniform(0, 2 * np.pi, n_floor)
        floor = c - dp * nc + np.outer(rr * np.cos(aa), t) + np.outer(rr * np.sin(aa), b)
        pts = np.concatenate([pts[~gone], wall, floor])
        nrm = np.concatenate([nrm[~gone], -radial_dir, np.tile(nc, (n_floor, 1))])
        labels = np.concatenate([np.zeros(int((~gone).sum()), np.uint8), np.ones(n_wall + n_floor, np.uint8)])
        desc.update(radius=rp, depth=dp)
    else:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    desc["centre_part_frame"] = c
    return pts, nrm, labels, desc


# ------------------------------------------------------------------------------------------------------ visibility


def visible(pts: np.ndarray, nrm: np.ndarray, cam: np.ndarray, spacing: float) -> np.ndarray:
    """Points a depth camera at ``cam`` (looking at the origin) would see: front-facing and not occluded.

    A perspective z-buffer with pixels of about two point spacings at the part; a point is visible when it faces
    the camera (cos > 0.12) and lies within a slope-dependent tolerance of the nearest depth in its 3x3 pixel
    neighbourhood. (N, 3), (N, 3), (3,) -> (N,) bool.
    """
    rel = pts - cam
    dist = np.linalg.norm(rel, axis=1)
    cosang = -np.einsum("ij,ij->i", nrm, rel) / dist
    front = cosang > 0.12
    fwd = -cam / np.linalg.norm(cam)
    right = np.cross(fwd, Z if abs(fwd @ Z) < 0.9 else X)
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    depth = rel @ fwd
    rng_cam = float(np.linalg.norm(cam))
    pix = 2.0 * spacing / rng_cam
    u = np.floor((rel @ right) / depth / pix).astype(np.int64)
    v = np.floor((rel @ up) / depth / pix).astype(np.int64)
    u -= u.min() - 1
    v -= v.min() - 1
    w, h = int(u.max()) + 2, int(v.max()) + 2
    zb = np.full(w * h, np.inf)
    lin = u * h + v
    np.minimum.at(zb, lin[front], depth[front])
    zb = minimum_filter(zb.reshape(w, h), size=3, mode="nearest").reshape(-1)
    tan = np.sqrt(np.clip(1 - cosang**2, 0, 1)) / np.maximum(cosang, 0.1)
    tol = spacing * (1.5 + 3.0 * np.minimum(tan, 4.0))
    return front & (depth <= zb[lin] + tol)


# ------------------------------------------------------------------------------------------- a realistic depth camera

BELT_CROP = 1.0  # mm: the scene crop drops everything this close to the belt (the belt itself and its noise)
JUMP_PIXELS = 10.0  # a depth step of more than this many pixel footprints between neighbours is an occlusion edge


def _rotate(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``p @ r.T`` for (N, 3) float64 points, column by column: a threaded BLAS call stalls on a busy CPU."""
    return p[:, :1] * r[:, 0] + p[:, 1:2] * r[:, 1] + p[:, 2:] * r[:, 2]


@dataclass
class Camera:
    """A pinhole camera in the belt frame: position, axes (rows: right, up, forward) and a window of ``w x h``
    square pixels of ``pitch`` (tangent of one pixel's angle) whose first pixel is (u0, v0) off the optical axis."""

    pos: np.ndarray
    axes: np.ndarray
    pitch: float
    u0: int = 0
    v0: int = 0
    w: int = 0
    h: int = 0

    def pixels(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3) belt frame -> camera-frame points (N, 3), pixel column and row in the window (N,) int64, and
        whether they fall inside it (N,)."""
        c = _rotate(pts - self.pos, self.axes)
        u = np.floor(c[:, 0] / c[:, 2] / self.pitch).astype(np.int64) - self.u0
        v = np.floor(c[:, 1] / c[:, 2] / self.pitch).astype(np.int64) - self.v0
        return c, u, v, (u >= 0) & (u < self.w) & (v >= 0) & (v < self.h) & (c[:, 2] > 0)

    def rays(self) -> np.ndarray:
        """(h, w, 3) camera-frame directions through the pixel centres, forward component 1: point = depth * ray."""
        u = (np.arange(self.w) + self.u0 + 0.5) * self.pitch
        v = (np.arange(self.h) + self.v0 + 0.5) * self.pitch
        uu, vv = np.meshgrid(u, v)
        return np.stack([uu, vv, np.ones_like(uu)], -1)


def render(cam: Camera, pts: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depth image of a densely sampled surface (several samples per pixel), by a z-buffer of the samples.

    Each pixel takes the nearest sample and the depth where its centre ray meets that sample's tangent plane, so a
    plane renders exactly. -> depth (h, w) (inf: no sample), source sample (h, w) int64 (-1), cosine of incidence
    (h, w), and ``hollow`` (h, w): empty pixels surrounded by the part (the samples missed them; no return there).
    """
    c, u, v, ok = cam.pixels(pts)
    nc = _rotate(nrm, cam.axes)
    ok &= np.einsum("ij,ij->i", nc, c) < 0  # front-facing
    idx = np.flatnonzero(ok)
    c, u, v, nc = c[idx], u[idx], v[idx], nc[idx]
    ray = np.stack([(u + cam.u0 + 0.5) * cam.pitch, (v + cam.v0 + 0.5) * cam.pitch, np.ones(len(u))], 1)
    along = np.einsum("ij,ij->i", nc, ray)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.einsum("ij,ij->i", nc, c) / along
    foot = 3 * cam.pitch * c[:, 2]
    z = np.where(np.isfinite(z), np.clip(z, c[:, 2] - foot, c[:, 2] + foot), c[:, 2])
    lin = v * cam.w + u
    order = np.lexsort((z, lin))
    first = order[np.r_[True, lin[order][1:] != lin[order][:-1]]]
    depth = np.full(cam.h * cam.w, np.inf)
    src = np.full(cam.h * cam.w, -1, np.int64)
    cos = np.zeros(cam.h * cam.w)
    depth[lin[first]], src[lin[first]] = z[first], idx[first]
    cos[lin[first]] = -along[first] / np.linalg.norm(ray[first], axis=1)
    occupied = src.reshape(cam.h, cam.w) >= 0
    hollow = binary_closing(occupied, np.ones((3, 3), bool), border_value=0) & ~occupied
    return depth.reshape(cam.h, cam.w), src.reshape(cam.h, cam.w), cos.reshape(cam.h, cam.w), hollow


def _occlusion_edges(z: np.ndarray, jump: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a depth image (h, w) (NaN: unknown) with a 4-neighbour more than ``jump`` (h, w) nearer: the far
    side of an occlusion edge. -> that mask (h, w) and the nearest neighbour's depth (h, w)."""
    known = np.where(np.isnan(z), np.inf, z)
    near = np.full(z.shape, np.inf)
    near[1:] = np.minimum(near[1:], known[:-1])
    near[:-1] = np.minimum(near[:-1], known[1:])
    near[:, 1:] = np.minimum(near[:, 1:], known[:, :-1])
    near[:, :-1] = np.minimum(near[:, :-1], known[:, 1:])
    with np.errstate(invalid="ignore"):
        return z - near > jump, near


def camera_scan(part: Part, kind: str, rng: np.random.Generator, n_points: int, depth: float | None
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """One test scan of ``part`` as a stereo depth camera on a line sees it: (N, 3) points (mm), (N,) labels, and a
    description. The points are in the line's frame (the camera calibrated to the belt, as ``edgead calibrate
    scene`` does), at an arbitrary offset, in the camera's pixel order.

    The part lies on the belt slightly turned (+-10 degrees), tilted (1-4 degrees) and shifted (+-5 mm); the camera
    looks at it from 3-5 part sizes away, 40-90 degrees above the belt. The pixel grid is sized for about
    ``n_points`` points. Artefacts: range noise along the ray growing with depth squared, depth quantised in
    disparity steps (also ~ depth squared), no return from surfaces seen steeper than a cut-off nor from dark or
    specular patches (holes), single dropped pixels, flying pixels (a depth between the two sides of an occlusion
    edge, labelled 0), and the belt crop. ``depth``: the defect's depth in mm.
    """
    n_dense = 16 * n_points
    pts, nrm = sample_surfaces(part.surfaces, rng, n_dense)
    tilt_axis = rng.uniform(0, 2 * np.pi)
    pose = axis_angle([np.cos(tilt_axis), np.sin(tilt_axis), 0.0], np.radians(rng.uniform(1, 4))) \
        @ axis_angle(Z, np.radians(rng.uniform(-10, 10)))
    shift = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), 0.0])
    belt = float((pts @ pose[2]).min())
    el, az = np.arcsin(rng.uniform(np.sin(np.radians(40)), 1.0)), rng.uniform(0, 2 * np.pi)
    view = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    distance = part.size * rng.uniform(3, 5)
    target = pose @ pts.mean(0) + shift + rng.uniform(-0.05, 0.05, 3) * part.size
    fwd = -view
    right = np.cross(fwd, Z if abs(fwd @ Z) < 0.999 else X)
    right /= np.linalg.norm(right)
    cam = Camera(target + view * distance, np.stack([right, np.cross(right, fwd), fwd]), 1.0)
    sensor = {"distance": distance, "sigma": part.size * rng.uniform(0.0004, 0.0012),
              "step": part.size * rng.uniform(0.0003, 0.001), "min_cos": rng.uniform(0.15, 0.3),
              "fly": rng.uniform(0.2, 0.6), "dropout": rng.uniform(0.002, 0.01)}
    front = np.flatnonzero(nrm @ (pose.T @ view) > 0)
    n_holes = int(rng.integers(1, 5))
    holes = [(pts[int(front[rng.integers(len(front))])], part.size * rng.uniform(0.02, 0.06)) for _ in range(n_holes)]

    def posed(p):
        return _rotate(p, pose) + shift

    # pixel pitch and window: the good part's silhouette covers about n_points / 0.85 pixels
    c = cam.pixels(posed(pts))[0]
    uv = c[:, :2] / c[:, 2:]
    trial = np.sqrt(part.area / 4 / n_points) / distance  # a convex part's silhouette is a quarter of its area
    cells = np.floor((uv - uv.min(0)) / trial).astype(np.int64)
    covered = len(np.unique(cells[:, 1] * (int(cells[:, 0].max()) + 1) + cells[:, 0]))
    cam.pitch = trial * np.sqrt(covered / (n_points / 0.85))
    uv = uv / cam.pitch
    cam.u0, cam.v0 = (int(x) - 4 for x in np.floor(uv.min(0)))
    cam.w, cam.h = (int(x) + 5 - lo for x, lo in zip(np.floor(uv.max(0)), (cam.u0, cam.v0), strict=True))
    shape = (cam.h, cam.w)
    noise, u_steep, u_drop, u_fly, alpha = (rng.normal(size=shape), rng.random(shape), rng.random(shape),
                                            rng.random(shape), rng.uniform(0.05, 0.95, shape))
    rays = cam.rays()
    footprint = cam.pitch * distance  # a pixel's size on the part

    def observe(p, n):
        """-> depth (h, w), source (h, w), returned (h, w) bool: a depth came back from the part."""
        z, src, cos, hollow = render(cam, posed(p), _rotate(n, pose))
        dark = np.zeros(len(p), bool)
        for centre, radius in holes:
            dark |= np.einsum("ij,ij->i", p - centre, p - centre) < radius**2
        steep = u_steep * sensor["min_cos"] > cos - sensor["min_cos"]  # none below min_cos, fewer up to twice it
        returned = (src >= 0) & ~dark[np.maximum(src, 0)] & ~steep & (u_drop >= sensor["dropout"])
        return np.where(hollow, np.nan, z), src, returned

    info: dict = {"kind": kind}
    labels = np.zeros(len(pts), np.uint8)
    if kind != "good":
        z, src, returned = observe(pts, nrm)
        seen = np.zeros(len(pts), bool)
        seen[src[returned]] = True
        cand = np.flatnonzero(seen & (nrm @ (pose.T @ view) > 0.45))
        for _attempt in range(20):
            ci = int(cand[rng.integers(len(cand))])
            p2, n2, l2, desc = apply_defect(kind, pts, nrm, ci, part.defect_size, n_dense / part.area, rng,
                                            1 / footprint**2, depth)
            z, src, returned = observe(p2, n2)
            if int(l2[src[returned]].sum()) >= max(12, int(4e-4 * n_points)):
                break
        pts, nrm, labels = p2, n2, l2
        info["defect"] = desc
    z, src, returned = observe(pts, nrm)
    pix_labels = np.where(src >= 0, labels[np.maximum(src, 0)], 0).astype(np.uint8)

    # the belt behind the part: depth where each pixel's ray meets it
    ray_belt = rays @ cam.axes
    with np.errstate(divide="ignore", invalid="ignore"):
        z_belt = np.where(ray_belt[..., 2] < 0, (belt - cam.pos[2]) / ray_belt[..., 2], np.inf)
    scene = np.where((src >= 0) | np.isnan(z), z, z_belt)  # hollow pixels stay unknown
    behind, near = _occlusion_edges(scene, JUMP_PIXELS * cam.pitch * scene)
    flying = behind & np.isfinite(near) & (u_fly < sensor["fly"])
    z[flying] = near[flying] + alpha[flying] * (scene[flying] - near[flying])
    returned = (returned | flying) & np.isfinite(z)
    pix_labels[flying] = 0

    # range noise and disparity quantisation, both growing with depth squared
    z = np.where(returned, z, distance)
    z = z + noise * sensor["sigma"] * (z / distance) ** 2
    k = distance**2 / sensor["step"]
    z = k / np.maximum(np.rint(k / z), 1.0)
    cloud = _rotate((z[..., None] * rays)[returned], cam.axes.T) + cam.pos  # the belt frame
    keep = cloud[:, 2] - belt > BELT_CROP
    offset = np.array([rng.uniform(-250, 250), rng.uniform(-250, 250), rng.uniform(450, 900)])
    cloud, pix_labels = cloud[keep] + offset, pix_labels[returned][keep]
    info.update(camera=cam.pos, sensor=sensor, rotation=pose, translation=shift + offset,
                n_flying=int((flying[returned][keep]).sum()), returned=float(returned.mean()))
    if "defect" in info:
        info["defect"]["centre"] = pose @ info["defect"].pop("centre_part_frame") + shift + offset
    return cloud, pix_labels, info


# --------------------------------------------------------------------------------------------------------- scans


@dataclass
class Scan:
    points: np.ndarray  # (N, 3) float32, sensor frame, mm (quantised to 1 um)
    labels: np.ndarray  # (N,) uint8
    info: dict


def sample_rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    """The generator for one scan: independent of the order and the set of scans generated."""
    return np.random.default_rng([int(seed), zlib.crc32(category.encode()), zlib.crc32(split.encode()), index])


def make_scan(category: str, kind: str, *, seed: int, index: int, split: str, n_points: int,
              track: str = "full", depth: float | None = None) -> Scan:
    """One scan of ``category``: ``kind`` is "good" or a defect type; ``split`` is "train" or "test". ``depth``: the
    defect's depth as a fraction of the part's size (default: drawn per type; on the real track 0.7-1.5 %)."""
    part = build_part(category)
    rng = sample_rng(seed, category, split, index)
    if track == "real" and split == "test":
        depth = rng.uniform(*REAL_DEPTHS) if depth is None else depth
        return _finish(part, *camera_scan(part, kind, rng, n_points, depth * part.size))
    one_sided = track == "scan" and split == "test"
    n_dense = int(n_points * (3.0 if one_sided else 1.0))  # one-sided: a camera sees 20-60 % of the surface
    pts, nrm = sample_surfaces(part.surfaces, rng, n_dense)
    density = n_dense / part.area
    spacing = float(np.sqrt(part.area / n_dense))
    info: dict = {"kind": kind}

    cam = None
    if one_sided:  # a camera somewhere above the part: elevation 25-90 degrees, any azimuth
        el, az = np.arcsin(rng.uniform(np.sin(np.radians(25)), 1.0)), rng.uniform(0, 2 * np.pi)
        view = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        cam = view * 4.0 * part.size
        info["camera"] = cam  # in the part frame, before the pose change
    labels = np.zeros(len(pts), np.uint8)
    if kind != "good":
        if one_sided:
            vis0 = visible(pts, nrm, cam, spacing)
            cand = np.flatnonzero(vis0 & (nrm @ view > 0.45))
        else:
            cand = np.arange(len(pts))
        for _attempt in range(20):
            ci = int(cand[rng.integers(len(cand))])
            p2, n2, l2, desc = apply_defect(kind, pts, nrm, ci, part.defect_size, density, rng,
                                            n_points / part.area, None if depth is None else depth * part.size)
            if one_sided:
                vis = visible(p2, n2, cam, spacing)
                n_lab = int(l2[vis].sum())
            else:
                n_lab = int(l2.sum())
            if n_lab >= max(12, int(4e-4 * n_points)):
                break
        pts, nrm, labels = p2, n2, l2
        info["defect"] = desc
    if one_sided:
        keep = np.flatnonzero(visible(pts, nrm, cam, spacing))
        if len(keep) > n_points:  # thin out uniformly to the requested size
            keep = np.sort(rng.choice(keep, n_points, replace=False))
        pts, nrm, labels = pts[keep], nrm[keep], labels[keep]

    # sensor noise and flying pixels
    sigma = part.size * rng.uniform(0.0006, 0.0012)
    pts = pts + rng.normal(scale=sigma, size=pts.shape)
    n_out = int(rng.integers(int(5e-4 * len(pts)), int(2e-3 * len(pts)) + 2))
    oi = rng.integers(len(pts), size=n_out)
    od = rng.normal(size=(n_out, 3))
    od /= np.linalg.norm(od, axis=1, keepdims=True)
    outl = pts[oi] + od * (part.size * rng.uniform(0.005, 0.05, n_out))[:, None]
    pts = np.concatenate([pts, outl])
    labels = np.concatenate([labels, np.zeros(n_out, np.uint8)])
    info.update(noise_sigma=sigma, n_outliers=n_out)

    # pose change and sensor-frame offset
    r = axis_angle(rng.normal(size=3), np.radians(rng.uniform(1, 5)))
    shift = rng.uniform(-3, 3, 3)
    offset = np.array([rng.uniform(-250, 250), rng.uniform(-250, 250), rng.uniform(450, 900)])
    pts = pts @ r.T + shift + offset
    info.update(rotation=r, translation=shift + offset)
    if "defect" in info:
        info["defect"]["centre"] = r @ info["defect"].pop("centre_part_frame") + shift + offset

    order = rng.permutation(len(pts))
    return _finish(part, pts[order], labels[order], info)


def _finish(part: Part, pts: np.ndarray, labels: np.ndarray, info: dict) -> Scan:
    """The scan on a 1 um grid (so the ground truth's text is exact), with its sizes in ``info``."""
    info["n_points"] = len(pts)
    info["n_defect_points"] = int(labels.sum())
    if "defect" in info:
        info["defect"]["depth_rel"] = info["defect"]["depth"] / part.size
    return Scan((np.rint(pts * 1000) / 1000).astype(np.float32), labels, info)


# --------------------------------------------------------------------------------------------------------- writing


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 4)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_gt(path: Path, pts: np.ndarray, labels: np.ndarray) -> None:
    """``x y z label`` lines, coordinates with 3 decimals (the points lie on a 1 um grid, so this is exact)."""
    cols = [pts[:, i].astype(np.float64).tolist() for i in range(3)]
    text = "\n".join([f"{x:.3f} {y:.3f} {z:.3f} {lab}" for x, y, z, lab in zip(*cols, labels.tolist(), strict=True)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _job(args):
    category, split, index, kind, name, depth, seed, n, track, out = args
    scan = make_scan(category, kind, seed=seed, index=index, split=split, n_points=n, track=track, depth=depth)
    root = Path(out) / category
    if split == "train":
        write_pcd(root / "train" / f"{name}.pcd", scan.points)
    else:
        write_pcd(root / "test" / f"{name}.pcd", scan.points)
        if kind != "good":
            _write_gt(root / "gt" / f"{name}.txt", scan.points, scan.labels)
    return category, split, name, scan.info


def plan(categories, seed: int, n_train: int, n_good: int, n_defective: int, depths=None):
    """The list of (category, split, index, kind, file stem, defect depth) to generate. With ``depths`` (fractions
    of the part's size) the defective scans go through every (type, depth) pair in turn; else depth is None."""
    jobs = []
    for cat in categories:
        for i in range(n_train):
            jobs.append((cat, "train", i, "good", f"{i:03d}_template", None))
        kinds = [("good", None)] * n_good + [
            (DEFECT_TYPES[i % len(DEFECT_TYPES)], depths[i // len(DEFECT_TYPES) % len(depths)] if depths else None)
            for i in range(n_defective)]
        order = sample_rng(seed, cat, "order", 0).permutation(len(kinds))
        for i, k in enumerate(order):
            jobs.append((cat, "test", i, kinds[k][0], f"{i:03d}_{kinds[k][0]}", kinds[k][1]))
    return jobs


def generate(out, *, seed: int = 0, track: str = "full", categories=None, points: int = TRAIN_POINTS,
             n_train: int = 4, n_good: int = 15, n_defective: int = 15, depths=None, workers: int | None = None,
             progress: bool = False) -> dict:
    """Write the benchmark to ``out``. Returns the metadata also written to ``out/synth.json``. ``depths``: a
    defect-size sweep, defect depths as fractions of the part's size (see :func:`plan`)."""
    categories = list(categories or CATEGORIES)
    for c in categories:
        if c not in PARTS:
            raise ValueError(f"unknown category {c!r}; expected some of {', '.join(CATEGORIES)}")
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}; expected one of {', '.join(TRACKS)}")
    if depths is not None and not all(0 < d < 0.2 for d in depths):
        raise ValueError(f"defect depths {list(depths)} must be fractions of the part's size in (0, 0.2)")
    if points < 500:
        raise ValueError(f"--points {points} is too few (at least 500)")
    if min(n_train, n_good, n_defective) < 1:
        raise ValueError("need at least one training scan, one good and one defective test scan")
    out = Path(out)
    n_test = max(300, int(points * TEST_FRACTION))
    jobs = plan(categories, seed, n_train, n_good, n_defective, depths)
    args = [(c, s, i, k, name, d, seed, points if s == "train" else n_test, track, str(out))
            for c, s, i, k, name, d in jobs]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    for c in categories:  # scans of an earlier run (say with more test samples) must not linger
        for sub, ext in (("train", "pcd"), ("test", "pcd"), ("gt", "txt")):
            for old in (out / c / sub).glob(f"[0-9][0-9][0-9]_*.{ext}"):
                old.unlink()
    t0 = time.time()
    if workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            results = list(ex.map(_job, args, chunksize=4))
    else:
        results = [_job(a) for a in args]
    meta = {"generator": "edgead synth", "version": 1, "seed": seed, "track": track, "train_points": points,
            "test_points": n_test, "categories": {}}
    if depths:
        meta["depths"] = list(depths)
    for c in categories:
        part = build_part(c)
        meta["categories"][c] = {"size_mm": part.size, "area_mm2": part.area, "samples": {}}
    for c, split, name, info in results:
        meta["categories"][c]["samples"][f"{split}/{name}"] = info
    meta = _jsonable(meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if progress:
        what = "category" if len(categories) == 1 else "categories"
        print(f"wrote {len(results)} scans of {len(categories)} {what} to {out} in {time.time() - t0:.1f} s")
    return meta
