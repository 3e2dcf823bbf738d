"""The robust-scoring rules (edgead.detectors.scoring) on frames whose right answer is known."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from edgead.detectors import scoring
from edgead.detectors.scoring import Scoring


def plane(n_side: int, spacing: float = 1.0) -> np.ndarray:
    """A square grid in z = 0: (n_side^2, 3) float32."""
    g = np.arange(n_side, dtype=np.float32) * spacing
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel(), np.zeros(x.size, np.float32)], 1)


def test_flying_pixels_are_isolated_and_the_surface_is_not():
    surface = plane(60)
    rng = np.random.default_rng(0)
    flying = np.column_stack([rng.uniform(0, 59, 20), rng.uniform(0, 59, 20), rng.uniform(5, 30, 20)])
    frame = np.concatenate([surface, flying]).astype(np.float32)
    iso = scoring.isolated(frame)
    assert iso[len(surface):].all()
    assert not iso[:len(surface)].any()


def test_isolated_points_take_the_score_of_the_surface_they_hang_off():
    surface = plane(40)
    frame = np.concatenate([surface, [[20.0, 20.0, 15.0]]]).astype(np.float32)
    raw = np.where(np.arange(len(frame)) == len(surface), 15.0, 0.01).astype(np.float32)
    out = scoring.robust_scores(frame, lambda x: (raw[: len(x)], None), Scoring(True, False, 1))
    assert out[-1] == np.float32(0.01)  # not 15: the flying pixel is not judged on its own
    off = scoring.robust_scores(frame, lambda x: (raw[: len(x)], None), Scoring.off())
    assert off[-1] == np.float32(15.0)


def test_neighbour_mean_shrinks_noise_and_keeps_a_defect_patch():
    """Signed range noise of sigma averages towards 0 over 16 neighbours; a 0.5-deep patch keeps its depth."""
    frame = plane(100)
    rng = np.random.default_rng(1)
    signed = rng.normal(0, 0.1, len(frame))
    patch = np.linalg.norm(frame[:, :2] - 50, axis=1) < 8
    signed[patch] += 0.5
    normals = np.tile(np.float32([0, 0, 1]), (len(frame), 1))
    normals[::2] *= -1  # reference normals have arbitrary signs: the rule makes them consistent
    signed_as_stored = np.where(normals[:, 2] > 0, signed, -signed)
    out = scoring.robust_scores(frame, lambda x: (signed_as_stored, normals), Scoring(False, True, 16))
    far = ~(np.linalg.norm(frame[:, :2] - 50, axis=1) < 12)
    assert np.percentile(out[far], 99) < 0.5 * np.percentile(np.abs(signed[far]), 99)
    core = np.linalg.norm(frame[:, :2] - 50, axis=1) < 5
    assert abs(np.median(out[core]) - 0.5) < 0.05
    assert out[core].min() > out[far].max()


def test_surface_distance_is_exact_between_sparse_reference_samples():
    ref = plane(11, spacing=2.0)  # samples 2 apart
    normals = np.tile(np.float32([0, 0, 1]), (len(ref), 1))
    tree = cKDTree(ref)
    q = np.float32([[1.0, 1.0, 0.3], [3.0, 5.0, -0.2], [25.0, 10.0, 0.0]])  # between samples, and off the edge
    d, n = scoring.surface_distance(q, ref, normals, tree, spacing=2.0)
    np.testing.assert_allclose(d[:2], [0.3, -0.2], atol=1e-6)  # the nearest sample is sqrt(2 + 0.09) away
    assert abs(d[2] - 3.0) < 1e-5  # 5 beyond the last sample sideways, less one spacing
    assert n.shape == (3, 3)


def test_a_large_frame_is_scored_on_voxel_representatives_and_spread(monkeypatch):
    monkeypatch.setattr(scoring, "NEIGHBOUR_POOL", 500)
    frame = plane(50)  # 2500 points, 1 apart
    seen = []

    def raw(x):
        seen.append(len(x))
        return x[:, 0].astype(np.float32), None

    reps, owner = scoring.pool(frame)
    assert 250 < len(reps) <= 500 and owner.shape == (2500,)
    assert np.abs(frame[reps][owner] - frame).max() < 3.0  # a point's representative shares its voxel
    out = scoring.robust_scores(frame, raw, Scoring(False, False, 4))
    assert seen == [len(reps)] and out.shape == (2500,)
    alone = scoring.robust_scores(frame[reps], raw, Scoring(False, False, 4))  # the representatives, scored alone
    np.testing.assert_array_equal(out, alone[owner])
    assert np.abs(out - frame[:, 0]).max() < 5.0
    stuck = np.tile(np.float32([[1.0, 2.0, 3.0]]), (2000, 1))  # one point repeated: no voxel edge to grow
    assert scoring.pool(stuck)[0].tolist() == [0]
    assert (scoring.robust_scores(stuck, raw, Scoring()) == 1.0).all()


def test_models_stored_before_the_rules_keep_raw_scores():
    assert scoring.stored({"a": 1})["scoring"] == Scoring.off()
    assert scoring.stored({"scoring": {"isolated": False, "surface": True, "neighbours": 8}})["scoring"] == \
        Scoring(False, True, 8)
