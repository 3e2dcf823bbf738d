"""A procedural corpus of machined parts for pre-training (``edgead synth --corpus N``): thousands of distinct
shapes from parametric families, so ``edgead pretrain`` works out of the box without ShapeNetPart or Visionair.

Families (dimensions in mm, drawn per part): flat **plates** (rounded or chamfered corners, holes, slots, ribs),
**channels** (U, Z and T sections extruded, with holes), stepped **shafts** (chamfers, grooves, a bore),
cylindrical **housings** (cups with a lid face, bosses, a flange ring) and **flanges** (disc, hub, bolt circle).
None of them is one of the benchmark's categories (bolt, gear, L-bracket, elbow, bottle, box housing): a corpus
must not teach the test parts. Shapes are built with ``edgead.tools.synth``'s surfaces and sampled uniformly by
area; each part is its own file ``OUT/NNNNN_<family>.npy`` of (points, 3) float32, centred at the origin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgead.ops import axis_angle
from edgead.tools.synth import X, cap, circle, prism_walls, rect, revolve, sample_surfaces, stadium


def rounded_rect(w: float, d: float, r: float, chamfer: bool = False, n: int = 8) -> np.ndarray:
    """Counter-clockwise outline of a w x d rectangle centred at 0 with filleted (or chamfered) corners of r."""
    corners = [(w / 2 - r, d / 2 - r, 0.0), (-w / 2 + r, d / 2 - r, np.pi / 2), (-w / 2 + r, -d / 2 + r, np.pi),
               (w / 2 - r, -d / 2 + r, 1.5 * np.pi)]
    pts = []
    for cx, cy, a0 in corners:
        a = np.linspace(a0, a0 + np.pi / 2, 2 if chamfer else n)
        pts.append(np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1))
    return np.vstack(pts)


def place_holes(rng: np.random.Generator, w: float, d: float, margin: float, k: int) -> list[np.ndarray]:
    """Up to ``k`` circular holes or slots inside a w x d region that neither overlap nor reach its margin."""
    holes, spots = [], []
    for _ in range(20 * k):
        if len(holes) == k:
            break
        r = rng.uniform(0.04, 0.1) * min(w, d)
        x = rng.uniform(-w / 2 + margin + r, w / 2 - margin - r)
        y = rng.uniform(-d / 2 + margin + r, d / 2 - margin - r)
        slot = rng.random() < 0.25
        reach = 2.2 * r if slot else r
        if all(np.hypot(x - sx, y - sy) > reach + sr + 1.0 for sx, sy, sr in spots):
            holes.append(stadium(x, y, 2 * reach, 2 * r) if slot else circle(x, y, r, 40))
            spots.append((x, y, reach))
    return holes


def plate(rng: np.random.Generator) -> list:
    w, d = rng.uniform(40, 160), rng.uniform(30, 120)
    t = rng.uniform(3, 12)
    outline = rounded_rect(w, d, rng.uniform(2, 0.2 * min(w, d)), chamfer=rng.random() < 0.4)
    holes = place_holes(rng, w, d, max(4, 0.08 * min(w, d)), int(rng.integers(0, 6)))
    surf = [prism_walls(outline, 0, t), cap(outline, t, True, holes), cap(outline, 0, False, holes)]
    surf += [prism_walls(h, 0, t, inward=True) for h in holes]
    if rng.random() < 0.5:  # a stiffening rib along x, clear of the holes' band
        rib = rect(-0.4 * w, -0.03 * d, 0.4 * w, 0.03 * d) + [0, rng.choice([-0.3, 0.3]) * d]
        rh = rng.uniform(3, 15)
        surf += [prism_walls(rib, t, t + rh), cap(rib, t + rh, True)]
    return surf


def channel(rng: np.random.Generator) -> list:
    """A U, Z or T section extruded along y, with its two end faces."""
    t, length = rng.uniform(2.5, 8), rng.uniform(40, 150)
    a, b = rng.uniform(20, 70), rng.uniform(15, 60)
    kind = rng.choice(["U", "Z", "T"])
    if kind == "U":
        section = [(0, 0), (a, 0), (a, b), (a - t, b), (a - t, t), (t, t), (t, b), (0, b)]
    elif kind == "Z":
        section = [(0, 0), (a / 2 + t / 2, 0), (a / 2 + t / 2, b - t), (a, b - t), (a, b), (a / 2 - t / 2, b),
                   (a / 2 - t / 2, t), (0, t)]
    else:
        section = [(0, 0), (a, 0), (a, t), (a / 2 + t / 2, t), (a / 2 + t / 2, b), (a / 2 - t / 2, b),
                   (a / 2 - t / 2, t), (0, t)]
    section = np.array(section, float) - [a / 2, 0]
    turn = axis_angle(X, np.pi / 2)  # the section drawn in (x, y), extruded along z, turned so z runs along -y
    return [s.transform(turn, [0, 0, 0]) for s in
            (prism_walls(section, 0, length), cap(section, 0, False), cap(section, length, True))]


def shaft(rng: np.random.Generator) -> list:
    """A stepped shaft: 2-5 diameters with chamfered shoulders, maybe grooves and a bore."""
    steps = int(rng.integers(2, 6))
    radii, lengths = rng.uniform(6, 30, steps), rng.uniform(10, 50, steps)
    bore = rng.uniform(2, 0.6 * radii.min()) if rng.random() < 0.4 else 0.0
    c = rng.uniform(0.5, 2.0)  # chamfer
    # (r, z) counter-clockwise: out along the bottom, up the outside, in along the top, down the bore
    prof, z = [(bore, 0.0), (radii[0] - c, 0.0), (radii[0], c)], 0.0
    for i in range(steps):
        r, z_end = radii[i], z + lengths[i]
        if i and lengths[i] > 10 and rng.random() < 0.3:  # a groove after the shoulder
            prof += [(r, z + 3), (0.85 * r, z + 3.5), (0.85 * r, z + 5.5), (r, z + 6)]
        nxt = radii[i + 1] if i + 1 < steps else bore
        if nxt < r:  # a step down (or the end): chamfer the outer edge
            prof += [(r, z_end - c), (r - c, z_end), (nxt, z_end)]
        else:  # a step up: chamfer the new shoulder's edge
            prof += [(r, z_end), (nxt - c, z_end), (nxt, z_end + c)]
        z = z_end
    if bore:
        prof.append((bore, 0.0))
    return [revolve(prof, 96)]


def housing(rng: np.random.Generator) -> list:
    """A cylindrical cup: wall, flat lid face with bosses, an optional flange ring at the open end."""
    r, h = rng.uniform(20, 60), rng.uniform(15, 60)
    wall = circle(0, 0, r, 96)
    bosses = []
    for k in range(int(rng.integers(0, 5))):
        a = 2 * np.pi * k / 4 + rng.uniform(-0.2, 0.2)
        bosses.append(circle(0.6 * r * np.cos(a), 0.6 * r * np.sin(a), rng.uniform(3, 0.15 * r + 3), 40))
    bh = rng.uniform(2, 8)
    surf = [cap(wall, h, True, bosses), cap(wall, 0, False)]
    surf += [s for b in bosses for s in (prism_walls(b, h, h + bh), cap(b, h + bh, True))]
    ft = 0.0
    if rng.random() < 0.5:  # a flange ring around the open end
        ring = circle(0, 0, r + rng.uniform(5, 15), 96)
        ft = rng.uniform(3, 8)
        surf += [prism_walls(ring, 0, ft), cap(ring, ft, True, [wall]), cap(ring, 0, False, [wall])]
    surf.append(prism_walls(wall, ft, h))
    return surf


def flange(rng: np.random.Generator) -> list:
    """A disc with a hub and a bore, and a circle of bolt holes."""
    r, t = rng.uniform(30, 90), rng.uniform(5, 15)
    hub_r, hub_h = rng.uniform(0.25, 0.5) * r, rng.uniform(5, 30)
    bore = circle(0, 0, rng.uniform(0.3, 0.8) * hub_r, 64)
    k = int(rng.integers(3, 9))
    pcd, hr = 0.5 * (r + hub_r), rng.uniform(0.04, 0.08) * r
    bolts = [circle(pcd * np.cos(a), pcd * np.sin(a), hr, 32) for a in 2 * np.pi * np.arange(k) / k]
    disc, hub = circle(0, 0, r, 128), circle(0, 0, hub_r, 96)
    surf = [prism_walls(disc, 0, t), cap(disc, 0, False, [bore] + bolts), cap(disc, t, True, [hub] + bolts),
            prism_walls(hub, t, t + hub_h), cap(hub, t + hub_h, True, [bore]),
            prism_walls(bore, 0, t + hub_h, inward=True)]
    surf += [prism_walls(b, 0, t, inward=True) for b in bolts]
    return surf


FAMILIES = {"plate": plate, "channel": channel, "shaft": shaft, "housing": housing, "flange": flange}


def corpus_part(seed: int, index: int, n_points: int) -> tuple[str, np.ndarray]:
    """(family, (n_points, 3) float32 points centred at 0, randomly turned) of part ``index``."""
    rng = np.random.default_rng([seed, index])
    family = list(FAMILIES)[index % len(FAMILIES)]
    pts, _ = sample_surfaces(FAMILIES[family](rng), rng, n_points)
    pts = pts @ axis_angle(rng.normal(size=3), rng.uniform(0, np.pi)).T
    return family, (pts - (pts.min(0) + pts.max(0)) / 2).astype(np.float32)


def generate_corpus(out: Path, n: int, seed: int = 0, n_points: int = 20_000) -> dict:
    """Write ``n`` parts to ``out`` (one ``.npy`` each) and ``corpus.json``; returns the latter's content."""
    if n < 1:
        raise ValueError(f"--corpus needs at least one part, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for i in range(n):
        family, pts = corpus_part(seed, i, n_points)
        np.save(out / f"{i:05d}_{family}.npy", pts)
        counts[family] = counts.get(family, 0) + 1
    meta = {"generator": "edgead synth --corpus", "seed": seed, "parts": n, "points": n_points, "families": counts}
    (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
