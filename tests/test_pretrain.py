"""Pre-training: mesh files sampled to points, the procedural corpus, `edgead pretrain` and `train --init` from it."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgead.formats.mesh import read_mesh, sample_surface  # noqa: E402
from edgead.formats.pointcloud import PointCloudError  # noqa: E402
from edgead.tools.corpus import FAMILIES, corpus_part, generate_corpus  # noqa: E402
from edgead.tools.synth import CATEGORIES  # noqa: E402
from edgead.train import TrainOptions  # noqa: E402
from edgead.train import dusnet as T  # noqa: E402
from edgead.train.pretrain import load_shapes, pretrain  # noqa: E402

# a unit cube: 8 vertices, 6 quads (fanned into 12 triangles by the readers)
CUBE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float)
CUBE_Q = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]


def write_obj(path):
    lines = [f"v {x} {y} {z}" for x, y, z in CUBE_V] + [f"f {' '.join(f'{i + 1}/1' for i in q)}" for q in CUBE_Q]
    path.write_text("# cube\n" + "\n".join(lines) + "\n")


def triangles():
    return [(q[0], q[i], q[i + 1]) for q in CUBE_Q for i in (1, 2)]


def write_stl(path, binary: bool):
    tris = triangles()
    if binary:
        body = b"".join(struct.pack("<3f", 0, 0, 0) + b"".join(struct.pack("<3f", *CUBE_V[i]) for i in t)
                        + b"\0\0" for t in tris)
        path.write_bytes(b"solid but binary".ljust(80, b" ") + struct.pack("<I", len(tris)) + body)
    else:
        facets = "".join("facet normal 0 0 0\n outer loop\n" + "".join(f"  vertex {x} {y} {z}\n" for x, y, z in
                         CUBE_V[list(t)]) + " endloop\nendfacet\n" for t in tris)
        path.write_text(f"solid cube\n{facets}endsolid cube\n")


def write_ply(path, binary: bool):
    head = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment a cube",
            "element vertex 8", "property float x", "property float y", "property float z", "element face 6",
            "property list uchar int vertex_indices", "end_header"]
    if binary:
        body = CUBE_V.astype("<f4").tobytes() + b"".join(struct.pack("<B4i", 4, *q) for q in CUBE_Q)
        path.write_bytes(("\n".join(head) + "\n").encode() + body)
    else:
        rows = [" ".join(map(str, v)) for v in CUBE_V] + ["4 " + " ".join(map(str, q)) for q in CUBE_Q]
        path.write_text("\n".join(head + rows) + "\n")


@pytest.mark.parametrize("fmt", ["obj", "stl-ascii", "stl-binary", "ply-ascii", "ply-binary"])
def test_meshes_read_and_sample_uniformly_on_their_surface(tmp_path, fmt):
    path = tmp_path / f"cube.{fmt.split('-')[0]}"
    {"obj": write_obj, "stl-ascii": lambda p: write_stl(p, False), "stl-binary": lambda p: write_stl(p, True),
     "ply-ascii": lambda p: write_ply(p, False), "ply-binary": lambda p: write_ply(p, True)}[fmt](path)
    v, f = read_mesh(path)
    assert f.shape == (12, 3)
    pts = sample_surface(v, f, 60_000, np.random.default_rng(0))
    on_face = np.isclose(pts, 0, atol=1e-6) | np.isclose(pts, 1, atol=1e-6)
    assert on_face.any(1).all()  # every point lies on a face of the cube
    for axis in range(3):  # and the six faces get equal shares (area-uniform)
        for side in (0.0, 1.0):
            share = np.isclose(pts[:, axis], side, atol=1e-6).mean()
            assert abs(share - 1 / 6) < 0.01


def test_bad_meshes_name_the_problem(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    with pytest.raises(PointCloudError, match="face indices"):
        read_mesh(tmp_path / "a.obj")
    (tmp_path / "b.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(PointCloudError, match="no faces"):
        read_mesh(tmp_path / "b.obj")
    (tmp_path / "c.stl").write_bytes(b"\x00" * 90)
    with pytest.raises(PointCloudError, match="STL"):
        read_mesh(tmp_path / "c.stl")


def test_corpus_is_deterministic_varied_and_never_a_benchmark_part(tmp_path):
    assert not set(FAMILIES) & set(CATEGORIES)
    a, b = corpus_part(3, 7, 2000), corpus_part(3, 7, 2000)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    extents = [np.ptp(corpus_part(3, i, 2000)[1], axis=0) for i in range(10)]
    assert len({tuple(np.round(e)) for e in extents}) == 10  # ten distinct parts
    meta = generate_corpus(tmp_path / "c", 10, seed=3, n_points=2000)
    assert meta["parts"] == 10 and set(meta["families"]) == set(FAMILIES)
    files = sorted((tmp_path / "c").glob("*.npy"))
    assert len(files) == 10 and np.array_equal(np.load(files[7]), a[1])


def test_pretrain_then_fine_tune_from_it(tmp_path):
    """`edgead pretrain` on a folder mixing a mesh and point clouds; `train --init` starts from those weights."""
    generate_corpus(tmp_path / "shapes", 6, n_points=3000)
    write_obj(tmp_path / "shapes" / "cube.obj")
    shapes = load_shapes(tmp_path / "shapes", n_points=3000)
    assert len(shapes) == 7 and all(s.shape[1] == 3 for s in shapes)
    out = tmp_path / "pre.pt"
    proc = subprocess.run([sys.executable, "-m", "edgead", "pretrain", "dusnet", "--data", str(tmp_path / "shapes"),
                           "--out", str(out), "--preset", "tiny", "--steps", "5", "--points", "3000",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ck = torch.load(out, weights_only=True)
    assert ck["pretrain"]["shapes"] == 7 and ck["arch"] == T.PRESETS["tiny"].arch.to_dict()
    clouds = [corpus_part(9, i, 3000)[1] * 1.5 + 100 for i in range(2)]  # stand-ins for a category's scans
    T.train(clouds, tmp_path / "run", TrainOptions(preset="tiny", steps=0, progress=False, init=out))
    tuned = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)
    assert all(torch.equal(tuned[k], ck["model"][k]) for k in tuned)  # 0 steps: the pre-trained weights, kept
    with pytest.raises(ValueError, match="do not fit the 'cpu' preset"):
        T.train(clouds, tmp_path / "run2", TrainOptions(preset="cpu", steps=0, progress=False, init=out))
    record = pretrain("dusnet", shapes, tmp_path / "again.pt", TrainOptions(preset="tiny", steps=3, progress=False,
                                                                             time_budget=60))
    assert record["steps_down"] == record["steps_up"] == 3


def test_r3dad_pretrains_too_and_fine_tunes_from_it(tmp_path):
    shapes = [corpus_part(2, i, 3000)[1] for i in range(5)]
    record = pretrain("r3dad", shapes, tmp_path / "r.pt", TrainOptions(preset="cpu", steps=2, progress=False))
    assert record["steps"] == 2 and record["shapes"] == 5
    from edgead.train import r3dad as R

    R.train(shapes[:2], tmp_path / "run", TrainOptions(preset="cpu", steps=0, progress=False, init=tmp_path / "r.pt"))
    pre, tuned = torch.load(tmp_path / "r.pt", weights_only=True)["model"], torch.load(
        tmp_path / "run" / "weights.pt", weights_only=True)
    assert all(torch.equal(tuned[k], pre[k]) for k in tuned)


def test_the_cpu_preset_starts_from_the_shipped_weights_unless_told_not_to(tmp_path):
    shipped = torch.load(T.PRETRAINED["cpu"], weights_only=True)
    assert shipped["arch"] == T.PRESETS["cpu"].arch.to_dict()  # the shipped file fits the preset it is shipped for
    clouds = [corpus_part(9, i, 3000)[1] * 1.5 + 100 for i in range(2)]
    T.train(clouds, tmp_path / "run", TrainOptions(preset="cpu", steps=0, progress=False))
    tuned = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)
    assert all(torch.equal(tuned[k], shipped["model"][k]) for k in tuned)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["train"]["init"].endswith("dusnet_cpu.pt")
    T.train(clouds, tmp_path / "scratch", TrainOptions(preset="cpu", steps=0, progress=False, pretrained=False))
    scratch = torch.load(tmp_path / "scratch" / "weights.pt", weights_only=True)
    assert not all(torch.equal(scratch[k], shipped["model"][k]) for k in scratch)
    assert json.loads((tmp_path / "scratch" / "model.json").read_text())["train"]["init"] is None
