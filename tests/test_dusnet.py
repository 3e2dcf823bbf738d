"""DUS-Net: module shapes, losses against brute force, Noise-Gen statistics, scoring, and short training runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.optimize import linear_sum_assignment  # noqa: E402

from edgead import ops  # noqa: E402
from edgead.detectors.dusnet import Pipeline, score_points  # noqa: E402
from edgead.models import dusnet as M  # noqa: E402
from edgead.models.losses import chamfer, emd, paired_cosine, paired_mse, repulsion  # noqa: E402
from edgead.runtime import EdgeDetector, object_score  # noqa: E402
from edgead.train import TrainOptions  # noqa: E402
from edgead.train import dusnet as T  # noqa: E402

TINY = T.PRESETS["tiny"]
G, K, GAMMA = TINY.pipeline.groups, TINY.pipeline.group_size, TINY.arch.gamma


def sphere(n: int, seed: int, bump: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 40 mm ball at an arbitrary offset, optionally with a 6 mm-high bump; (points, point labels)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    labels = np.zeros(n, np.uint8)
    if bump:
        d = np.linalg.norm(p - np.array([0.0, 0.0, 1.0]), axis=1)
        labels[d < 0.35] = 1
        p *= (1 + 0.3 * np.clip(1 - d / 0.35, 0, None))[:, None]
    return (p * 20 + np.array([300.0, -120.0, 45.0])).astype(np.float32), labels


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dusnet_run")
    clouds = [sphere(3000, s)[0] for s in range(4)]
    T.train(clouds, out, TrainOptions(preset="tiny", steps=40, progress=False))
    return out


# ---- modules
def test_module_shapes():
    g, k, b = G, K, 2
    patches, centers = torch.randn(b, g, k, 3), torch.randn(b, g, 3)
    assert M.PointNet(32)(patches).shape == (b, g, 32)
    assert M.Block(32, 2)(torch.randn(b, g, 32)).shape == (b, g, 32)
    assert M.DownNet(TINY.arch)(patches, centers).shape == (b, g, 3)
    sa = M.SetAbstraction(5, 8, 4)
    assert sa(centers[:, :10], centers, torch.randn(b, g, 5)).shape == (b, 10, 8)
    assert M.interpolate3(centers, centers[:, :10], torch.randn(b, 10, 7)).shape == (b, g, 7)
    assert M.UpNet(TINY.arch, g)(centers).shape == (b, g * GAMMA, 3)
    (recon,) = M.DusNet(TINY.arch, g)(patches[0], centers[0])
    assert recon.shape == (g * GAMMA, 3)


def test_interpolate3_keeps_own_feature_and_weights_by_inverse_distance():
    q = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 4]]])
    f = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    p = torch.tensor([[[1.0, 0, 0], [0, 0, 0.5]]])
    out = M.interpolate3(p, q, f)[0, :, 0]
    assert out[0] == pytest.approx(2.0, abs=1e-3)
    d = np.array([0.5, np.hypot(1, 0.5), np.hypot(2, 0.5)])  # 3 nearest of (0, 0, .5): q0, q1, q2
    w = 1 / (d + 1e-4)  # the graph's epsilon
    assert out[1] == pytest.approx(float((w * [1, 2, 3]).sum() / w.sum()), rel=1e-5)


def test_noise_gen_statistics():
    gen = torch.Generator().manual_seed(0)
    patches, centers = torch.randn(4, 256, 64, 3) * 0.1, torch.randn(4, 256, 3)
    noisy_p, noisy_c = M.noise_gen(patches, centers, 0.08, 0.15, gen)
    dc = noisy_c - centers
    dn = noisy_p + noisy_c.unsqueeze(2) - (patches + centers.unsqueeze(2))  # neighbour displacement
    assert float(dc.mean()) == pytest.approx(0, abs=0.005)
    assert float(dc.std()) == pytest.approx(0.08, rel=0.03)
    assert float(dn.std()) == pytest.approx(0.15, rel=0.01)
    assert abs(float(torch.corrcoef(torch.stack([dn[..., 0, 0].flatten(), dc[..., 0].flatten()]))[0, 1])) < 0.05


def test_inference_graph_is_deterministic_and_noise_free():
    model = M.DusNet(TINY.arch, G).eval()
    patches, centers = torch.randn(G, K, 3), torch.randn(G, 3)
    with torch.no_grad():
        assert torch.equal(model(patches, centers)[0], model(patches, centers)[0])


# ---- losses against brute-force numpy
def test_chamfer_mse_cosine_against_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 7, 3)), rng.normal(size=(2, 5, 3))
    d = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    expect = np.mean([d[i].min(1).mean() + d[i].min(0).mean() for i in range(2)])
    assert float(chamfer(torch.tensor(a), torch.tensor(b))) == pytest.approx(expect, rel=1e-6)
    c = rng.normal(size=(2, 7, 3))
    assert float(paired_mse(torch.tensor(a), torch.tensor(c))) == pytest.approx(((a - c) ** 2).sum(-1).mean())
    cos = (a * c).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(c, axis=-1)
    assert float(paired_cosine(torch.tensor(a), torch.tensor(c))) == pytest.approx((1 - cos).mean(), rel=1e-6)


def test_repulsion_against_numpy():
    rng = np.random.default_rng(2)
    p, k, h = rng.normal(size=(1, 12, 3)), 3, 0.7
    d = np.sqrt(((p[0, :, None] - p[0, None]) ** 2).sum(-1))
    nn = np.sort(d, 1)[:, 1: k + 1]
    expect = (-nn * np.exp(-nn**2 / h**2)).sum(1).mean()
    assert float(repulsion(torch.tensor(p), k, h)) == pytest.approx(expect, rel=1e-5)
    ref = np.concatenate([p, rng.normal(size=(1, 5, 3))], 1)  # neighbours may come from a larger set
    d = np.sqrt(((p[0, :, None] - ref[0, None]) ** 2).sum(-1))
    nn = np.sort(d, 1)[:, 1: k + 1]
    expect = (-nn * np.exp(-nn**2 / h**2)).sum(1).mean()
    assert float(repulsion(torch.tensor(p), k, h, torch.tensor(ref))) == pytest.approx(expect, rel=1e-5)


def test_emd_matches_exact_assignment_on_small_sets():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 9, 3)), rng.normal(size=(3, 9, 3))
    exact = []
    for x, y in zip(a, b, strict=True):
        cost = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
        r, c = linear_sum_assignment(cost)
        exact.append(cost[r, c].mean())
    approx = float(emd(torch.tensor(a), torch.tensor(b), eps=0.002, iters=1000))
    assert approx == pytest.approx(np.mean(exact), rel=0.01)
    assert approx >= np.mean(exact) * (1 - 1e-3)  # no transport plan beats the optimal one (up to marginals)
    x = torch.tensor(a, requires_grad=True)  # gradients flow through the matched pairs
    emd(x, torch.tensor(b)).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


# ---- pipeline
def test_score_points_against_numpy():
    rng = np.random.default_rng(4)
    x, recon = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(20, 3)).astype(np.float32)
    d = np.sort(np.sqrt(((x[:, None] - recon[None]) ** 2).sum(-1)), 1)[:, :3]
    expect = (1 - np.exp(d[:, 0]) / np.exp(d).sum(1)) * d[:, 0]
    np.testing.assert_allclose(score_points(x, recon, "point"), expect, rtol=1e-4, atol=1e-6)


def test_surface_score_ignores_reconstruction_spacing():
    g = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0), [0.0]), -1).reshape(-1, 3).astype(np.float32)
    between = np.array([[4.5, 4.5, 0.0], [3.5, 5.5, 0.0]], np.float32)  # on the surface, between recon points
    above = np.array([[4.5, 4.5, 0.3]], np.float32)  # 0.3 off the surface, all 3 nearest planes are z = 0
    assert score_points(between, g, "point").min() > 0.2  # the literal eq. 15 sees the spacing
    np.testing.assert_allclose(score_points(between, g, "surface"), 0, atol=1e-5)
    np.testing.assert_allclose(score_points(above, g, "surface"), 0.3 * (1 - 1 / 3), rtol=1e-4)  # equal d: 1 - 1/3
    with pytest.raises(ValueError, match="plane"):
        score_points(between, g, "plane")


@pytest.mark.parametrize("n", [5, 40, 300, 5000])
def test_pipeline_has_fixed_shapes_for_any_cloud_size(n):
    pipe = Pipeline(TINY.pipeline, ops.Normalization(scale=20.0), sphere(500, 9)[0] / 20)
    x = pipe.to_model_frame(sphere(n, 5)[0])
    patches, centers = pipe.group(pipe.thin(x))
    assert patches.shape == (G, K, 3) and patches.dtype == np.float32
    assert centers.shape == (G, 3) and x.shape == (n, 3) and np.isfinite(patches).all()
    if n >= 5000:  # enough of the ball seen to be judged at all
        feeds, context, inspection = pipe.preprocess(sphere(n, 5)[0])
        np.testing.assert_array_equal(feeds["patches"], patches)
        assert inspection.coverage > 0.5 and inspection.fitness > 0.9


def test_alignment_undoes_offset_and_small_rotation():
    ref = sphere(4000, 0)[0]
    ref *= np.array([1.0, 1.5, 2.2], np.float32)  # three distinct axes, so any rotation is observable
    norm = ops.Normalization(scale=40.0)
    pipe = Pipeline(TINY.pipeline, norm, norm.apply(ref, ops.bbox_center(ref)))
    moved = ref @ ops.random_rotation(np.random.default_rng(0), np.radians(8.0)).T + np.array([1000.0, 5.0, -30.0])
    x = pipe.to_model_frame(moved.astype(np.float32))
    assert np.abs(x - pipe.reference).max() < 0.01


# ---- training runs
def test_run_dir_loads_and_detects_deterministically(run):
    doc = json.loads((run / "model.json").read_text())
    assert doc["name"] == "dusnet" and len(doc["model_hash"]) == 64 and doc["kind"] == "dusnet"
    assert doc["arch"] == TINY.arch.to_dict() and doc["pipeline"]["config"] == TINY.pipeline.to_dict()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in log} == {"down", "up"}
    det = EdgeDetector.load(run)
    points = sphere(4000, 11)[0]
    a, b = det.detect(points), det.detect(points)
    assert a.point_scores.shape == (4000,) and np.isfinite(a.point_scores).all()
    np.testing.assert_array_equal(a.point_scores, b.point_scores)
    assert a.score == pytest.approx(object_score(points, a.point_scores))
    small = det.detect(sphere(300, 12)[0])
    assert small.point_scores.shape == (300,) and np.isfinite(small.point_scores).all()


def test_init_checkpoint_is_loaded(run, tmp_path):
    clouds = [sphere(2000, s)[0] for s in range(2)]
    T.train(clouds, tmp_path, TrainOptions(preset="tiny", steps=0, progress=False, init=run / "weights.pt"))
    a = torch.load(run / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_checkpoint_step(tmp_path, monkeypatch):
    clouds = [sphere(2000, s)[0] for s in range(2)]
    opts = TrainOptions(preset="tiny", steps=12, progress=False)
    monkeypatch.setattr(T, "CKPT_EVERY", 5)
    calls = {"n": 0}
    real = T.down_losses

    def crash_at_step_7(*args):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(T, "down_losses", crash_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        T.train(clouds, tmp_path, opts)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["step"] == 5
    calls["n"] = -100
    T.train(clouds, tmp_path, replace(opts, resume=True))
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    down_steps = [e["step"] for e in log if e["stage"] == "down"]
    assert down_steps == [1, 11, 12]  # the first step logged once: the resumed run started after step 5
    assert calls["n"] == -100 + 7  # steps 5..11 only
    assert (tmp_path / "weights.pt").exists()


@pytest.mark.xfail(reason="measured: after 40 tiny-preset steps on a sphere the bump is not separated (point AUROC "
                          "0.58 surface score, 0.46 point score; the reconstruction follows the bump), see "
                          "docs/dusnet.md", strict=True)  # a pass means it is fixed: remove the mark
def test_planted_bump_scores_higher(run):
    from edgead.tools.metrics import roc_auc

    det = EdgeDetector.load(run)
    points, labels = sphere(4000, 21, bump=True)
    assert roc_auc(labels, det.detect(points).point_scores) > 0.9


def test_diagnose_script_reports_a_ceiling_that_finds_a_planted_bump(tmp_path):
    """benchmarks/diagnose_dusnet.py on spheres in the Real3D-AD layout: every part reports, and the oracle ceiling
    (the training scans as the reconstruction) ranks the bump's points above the normal ones."""
    import subprocess
    import sys
    from pathlib import Path

    from edgead.formats.pointcloud import write_pcd

    cat = tmp_path / "sphere"
    for d in ("train", "test", "gt"):
        (cat / d).mkdir(parents=True)
    for s in range(4):
        write_pcd(cat / "train" / f"{s}.pcd", sphere(3000, s)[0])
    for s in range(10, 13):
        write_pcd(cat / "test" / f"{s}_good.pcd", sphere(3000, s)[0])
        pts, labels = sphere(3000, s + 10, bump=True)
        write_pcd(cat / "test" / f"{s}_bump.pcd", pts)
        np.savetxt(cat / "gt" / f"{s}_bump.txt", np.column_stack([pts, labels]), fmt="%.5f")
    T.train([sphere(3000, s)[0] for s in range(4)], tmp_path / "run",
            TrainOptions(preset="tiny", steps=5, progress=False))
    script = Path(__file__).parents[1] / "benchmarks" / "diagnose_dusnet.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--data", str(cat)],
                         capture_output=True, text=True, check=True).stdout
    parts = [json.loads(line) for line in out.splitlines()]
    assert [p["part"] for p in parts] == ["ceiling", "ceiling", "down-net", "up-net"]
    assert parts[1]["reconstruction_points"] == 4 * parts[0]["reconstruction_points"]
    assert parts[0]["P-AUROC"] > 0.8 and parts[1]["P-AUROC"] > parts[0]["P-AUROC"]
    assert parts[0]["O-AUROC"] == 1.0
    assert 0 < parts[2]["normal_in_mm"] < parts[2]["defect_in_mm"]
    assert parts[3]["recon_to_surface_mm"] > 0


def test_time_budget_ends_training_early_and_says_so(tmp_path):
    clouds = [sphere(2000, s)[0] for s in range(2)]
    T.train(clouds, tmp_path, TrainOptions(preset="tiny", steps=100_000, progress=False, time_budget=1.0))
    info = json.loads((tmp_path / "model.json").read_text())["train"]
    assert info["planned_steps"] == [100_000, 100_000] and info["time_budget"] == 1.0
    assert 0 < info["steps_down"] < 100_000 and 0 < info["steps_up"] < 100_000
    assert EdgeDetector.load(tmp_path).detect(sphere(3000, 5)[0]).point_scores.shape == (3000,)
