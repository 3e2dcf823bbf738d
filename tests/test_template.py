import json
from dataclasses import replace

import numpy as np
import pytest

from edgead import EdgeDetector, ops
from edgead.detectors import build_pipeline, template
from edgead.train import template as template_train

AXES = np.array([40.0, 25.0, 15.0])  # an ellipsoidal part (mm): no symmetry that small pose changes could flip


def rotation(rng, deg):
    """A random rotation of about ``deg`` degrees (Rodrigues)."""
    w = np.deg2rad(deg) * rng.normal(size=3) / np.sqrt(3)
    a = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / a
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def part_scan(n, seed, *, bulge=0.0, one_sided=False, offset=(800.0, -250.0, 400.0), deg=3.0):
    """A noisy scan of the part at a random small pose: (n', 3) float32 points, (n',) uint8 labels.

    ``bulge`` (mm) pushes a 6 mm patch outwards along the normal; its points are labelled 1.
    """
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(2 * n, 3))
    p = d / np.linalg.norm(d, axis=1, keepdims=True) * AXES
    p = p[p[:, 2] > -4][:n] if one_sided else p[:n]
    labels = np.zeros(len(p), np.uint8)
    if bulge:
        normal = p / AXES**2
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        r = np.linalg.norm(p - [0, 0, AXES[2]], axis=1)  # patch on the top, visible in one-sided views
        near = r < 6
        p[near] += normal[near] * (bulge * (1 - r[near] / 6))[:, None]
        labels[near] = 1
    r, t = pose(seed, deg, offset)
    return ((p + rng.normal(scale=0.05, size=p.shape)) @ r.T + t).astype(np.float32), labels


def pose(seed, deg=3.0, offset=(800.0, -250.0, 400.0)):
    """The scan's pose: a rotation of about ``deg`` degrees and an offset jittered by ~5 mm. -> R (3, 3), t (3,)."""
    rng = np.random.default_rng([seed, 1])
    return rotation(rng, deg), np.asarray(offset) + rng.normal(scale=5, size=3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("template_run")
    template_train.train([part_scan(20000, s)[0] for s in range(3)], out)
    return out


def test_run_dir_loads_and_roundtrips(run_dir):
    doc = json.loads((run_dir / "model.json").read_text())
    assert doc["kind"] == "template" and doc["name"] == "template" and len(doc["model_hash"]) == 64
    det = EdgeDetector.load(run_dir)
    assert det.runner is None and det.backend == "numpy" and det.model_hash == doc["model_hash"]
    ref = det.pipeline.reference
    assert ref.dtype == np.float32 and ref.shape[1] == 3 and len(ref) <= template_train.MAX_REFERENCE
    meta, arrays = det.pipeline.state()
    again = template.Pipeline.from_state(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_array_equal(again.reference, ref)
    assert again.config == det.pipeline.config


def test_reference_is_the_aligned_union(run_dir):
    """The training poses differ by ~3 degrees and ~5 mm; merged unaligned they would smear by millimetres."""
    ref = EdgeDetector.load(run_dir).pipeline.reference
    r, t = pose(0)  # the first scan's pose: the reference's frame
    d = np.random.default_rng(9).normal(size=(400000, 3))
    surface = d / np.linalg.norm(d, axis=1, keepdims=True) * AXES
    err = ops.nearest_distance((ref - t) @ r, surface)
    assert np.percentile(err, 99) < 0.3  # sensor noise (sigma 0.05) + the spacing of the surface sample
    unaligned = np.concatenate([part_scan(20000, s)[0] for s in range(3)])
    assert np.percentile(ops.nearest_distance((unaligned - t) @ r, surface), 99) > 1.0


def test_scores_are_distances_in_mm_and_find_the_defect(run_dir):
    det = EdgeDetector.load(run_dir)
    good = [det.detect(part_scan(30000, 100 + s, one_sided=s % 2 == 1)[0]) for s in range(4)]
    assert max(r.score for r in good) < 0.8  # noise + reference spacing only
    for s, one_sided in ((200, False), (201, True)):
        pts, labels = part_scan(30000, s, bulge=2.0, one_sided=one_sided)
        res = det.detect(pts)
        assert res.point_scores.max() > 1.5  # the 2 mm bulge, measured in mm
        assert res.score > 1.0  # the neighbourhood-averaged object score keeps most of it
        assert res.score > max(r.score for r in good)
        assert int(np.argmax(res.point_scores)) in set(np.flatnonzero(labels))
        assert np.median(res.point_scores[labels == 0]) < 0.25


def test_alignment_undoes_pose_and_offset(run_dir):
    det = EdgeDetector.load(run_dir)
    pts, _ = part_scan(30000, 7, one_sided=True, offset=(-3000.0, 1200.0, 50.0), deg=6.0)
    r, t = det.pipeline.align(pts)
    d = ops.nearest_distance(pts @ r.T + t, det.pipeline.reference)
    assert np.median(d) < 0.2


def test_voxel_thin_bounds_size_and_averages():
    pts = part_scan(50000, 3)[0]
    thin = template_train.voxel_thin(pts, 5000)
    assert 2500 < len(thin) <= 5000 and thin.dtype == np.float32
    assert ops.nearest_distance(thin, pts).max() < 2.0  # voxel means stay on the surface
    np.testing.assert_array_equal(template_train.voxel_thin(pts[:100], 5000), pts[:100])


def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="no training clouds"):
        template_train.train([], tmp_path)
    with pytest.raises(ValueError, match="training cloud 1 has 5 finite points"):
        template_train.train([part_scan(2000, 0)[0], part_scan(5, 1)[0]], tmp_path)
    with pytest.raises(ValueError, match="'reference' and 'normals'"):
        build_pipeline("template", {"config": {}}, {"reference": np.zeros((100, 3), np.float32)})


def elbow_scan(n, seed, *, one_sided=False, deg=4.0):
    """A quarter-torus pipe elbow (bend radius 40 mm, pipe radius 10 mm); one-sided: the half facing a camera."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(0, np.pi / 2, 3 * n), rng.uniform(0, 2 * np.pi, 3 * n)
    normal = np.c_[np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)]
    p = np.c_[40 * np.cos(u), 40 * np.sin(u), np.zeros_like(u)] + 10 * normal
    if one_sided:
        p = p[normal @ (np.array([0.5, -0.3, 0.8]) / np.sqrt(0.98)) > 0.1]
    p = p[:n] + rng.normal(scale=0.05, size=(min(n, len(p)), 3))
    return (p @ (axis_rotation(2, deg) @ axis_rotation(0, deg / 2)).T + [500, 200, 800]).astype(np.float32)


def axis_rotation(axis: int, deg: float) -> np.ndarray:
    return ops.axis_angle(np.eye(3)[axis], np.radians(deg))


def test_restarts_rescue_a_trapped_alignment(tmp_path):
    pipe = template_train.train([elbow_scan(20000, s, deg=s) for s in range(3)], tmp_path)
    assert pipe.config.fit_tolerance > 0  # learnt from the training scans (leave one out)
    no_restarts = template.Pipeline(pipe.reference, pipe.normals, replace(pipe.config, fit_tolerance=np.inf))
    plain, restarted = [], []
    for seed, deg in ((31, 35), (31, 45), (32, 40), (32, 45)):  # one-sided views, turned by 35-45 degrees
        pts = elbow_scan(8000, seed, one_sided=True, deg=0)
        c = ops.bbox_center(pts)
        pts = (pts - c) @ axis_rotation(0, deg).T + c
        for p, out in ((no_restarts, plain), (pipe, restarted)):
            r, t = p.align(pts)
            out.append(np.median(ops.nearest_distance(pts @ r.T + t, p.reference)))
    assert sum(m > 0.5 for m in plain) >= 2  # from the box centres ICP settles in a wrong minimum ...
    assert max(restarted) < 0.2  # ... and a restart finds the right one


def test_fit_tolerance_sits_just_above_a_good_fit():
    """Learnt by leaving each training scan out: a good test scan fits within it, a trapped one (>= 4x) does not."""
    aligned = template.align_to_first([elbow_scan(20000, s, deg=s) for s in range(3)], template.TemplateConfig())
    tol = template_train.fit_tolerance(aligned, template.TemplateConfig())
    ref = template_train.voxel_thin(np.concatenate(aligned), 100_000)
    pipe = template.Pipeline(ref, ops.estimate_normals(ref), template.TemplateConfig(fit_tolerance=tol))
    good = elbow_scan(8000, 50, one_sided=True)
    coarse = good[ops.stride_subsample(len(good), 512)]
    fit = pipe.residual(coarse, *pipe.icp(coarse))
    assert fit < tol < 4 * fit
    assert template_train.fit_tolerance(aligned[:1], template.TemplateConfig()) == 0.0  # one scan: always restart


def test_a_run_directory_of_an_older_format_is_refused_by_name(run_dir, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "pipeline.npz").write_bytes((run_dir / "pipeline.npz").read_bytes())
    (old / "model.json").write_text(json.dumps({"pipeline": {"kind": "template"}, "name": "template",
                                                "model_hash": "0123456789abcdef"}))  # what edgead 0.1 wrote
    with pytest.raises(ValueError, match="format 'edgead-run/1"):
        EdgeDetector.load(old)


def test_an_edited_run_directory_is_refused(run_dir, tmp_path):
    import shutil

    for edit in ("field", "array"):
        copy = tmp_path / edit
        shutil.copytree(run_dir, copy)
        doc = json.loads((copy / "model.json").read_text())
        if edit == "field":
            doc["pipeline"]["config"]["trim"] = 0.5
            (copy / "model.json").write_text(json.dumps(doc))
            match = "content hash"
        else:
            arrays = dict(np.load(copy / "pipeline.npz"))
            arrays["reference"][0, 0] += 0.01  # one reference point moved by 10 um, saved again
            np.savez(copy / "pipeline.npz", **arrays)
            match = "sha256"
        with pytest.raises(ValueError, match=match):
            EdgeDetector.load(copy)


def test_grid_scoring_is_exact_and_its_memory_is_stated(run_dir):
    """Registration and scores through the stored grid equal those with every nearest point from the k-d tree (a
    pipeline without a grid, as a run directory from before it loads), the defect's far points included; the run's
    description states the grid's size, within the 64 MB cap."""
    doc = json.loads((run_dir / "model.json").read_text())["train"]["grid"]
    assert 0 < doc["megabytes"] <= doc["max_megabytes"] == 64 and doc["candidates_per_cell"] == 4
    det = EdgeDetector.load(run_dir)
    p = det.pipeline
    meta, arrays = p.state()
    assert p.grid is not None and any(k.startswith("grid_") for k in arrays)
    tree_only = build_pipeline("template", meta, {"reference": arrays["reference"], "normals": arrays["normals"]})
    assert tree_only.grid is None
    exact = EdgeDetector(tree_only, None, backend="numpy")
    for seed, one_sided in ((300, False), (301, True)):
        pts, labels = part_scan(30000, seed, bulge=2.0, one_sided=one_sided)
        a, b = det.detect(pts), exact.detect(pts)
        np.testing.assert_array_equal(a.point_scores, b.point_scores)
        assert a.score == b.score and a.point_scores[labels == 1].max() > 1.5
