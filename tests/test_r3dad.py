"""R3D-AD: networks, diffusion schedule, Patch-Gen, training, pipeline and the exported graph."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgead.detectors import NotInspected, build_pipeline  # noqa: E402
from edgead.detectors.r3dad import cluster_distance, propagate, subsample_indices  # noqa: E402
from edgead.models.r3dad import (  # noqa: E402
    R3DAD,
    ConcatSquashLinear,
    InferenceGraph,
    PointNetEncoder,
    PointwiseNet,
    ddim_timesteps,
    ddpm_schedule,
)
from edgead.runtime import EdgeDetector, object_score  # noqa: E402
from edgead.train import TrainOptions  # noqa: E402
from edgead.train import r3dad as T  # noqa: E402
from edgead.train.patchgen import patch_gen  # noqa: E402

CPU = T.PRESETS["cpu"]
TINY = T.Preset(replace(CPU.pipeline, num_points=128),
                replace(CPU.arch, hidden=(32, 32), encoder=(32, 64), latent_dim=16, sample_steps=4),
                replace(CPU.train, batch_size=4))


def tiny(**train) -> T.Preset:
    return replace(TINY, train=replace(TINY.train, **train))


def ellipsoid(n: int, seed: int = 0, offset=(100.0, -40.0, 250.0)) -> np.ndarray:
    """(n, 3) float32 points on an ellipsoid in mm at an arbitrary offset."""
    p = np.random.default_rng(seed).standard_normal((n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return (p * [40.0, 25.0, 15.0] + offset).astype(np.float32)


def test_module_shapes():
    x = torch.randn(2, 50, 3)
    c = PointNetEncoder((16, 32), 8)(x)
    assert c.shape == (2, 8)
    eps = PointwiseNet((16, 24), 8)(torch.randn(2, 50, 3), x, torch.tensor([0.1, 0.2]), c)
    assert eps.shape == (2, 50, 3)


def test_concat_squash_semantics():
    torch.manual_seed(0)
    layer = ConcatSquashLinear(3, 5, 4)
    x, ctx = torch.randn(2, 7, 3), torch.randn(2, 1, 4)
    manual = (x @ layer.layer.weight.T + layer.layer.bias) * torch.sigmoid(ctx @ layer.gate.weight.T + layer.gate.bias)
    manual = manual + ctx @ layer.bias.weight.T
    assert torch.allclose(layer(x, ctx), manual, atol=1e-6)
    assert layer.bias.bias is None  # the context shift has no constant term of its own
    other = layer(x, ctx + 1.0)
    assert not torch.allclose(layer(x, ctx), other)  # the context changes the output


def test_ddpm_schedule_values():
    s = ddpm_schedule(200, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 200)
    abar = np.cumprod(1 - betas)
    assert s["betas"][0] == 0 and s["abar"][0] == 1
    np.testing.assert_allclose(s["betas"][1:].numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(s["abar"][1:].numpy(), abar, rtol=1e-5)
    assert abs(float(s["abar"][200]) - 0.1322) < 1e-4  # the input survives the full masking with weight 0.36
    sigma = np.sqrt(betas[1:] * (1 - abar[:-1]) / (1 - abar[1:]))
    np.testing.assert_allclose(s["sigma"][2:].numpy(), sigma, rtol=1e-5)
    assert ddim_timesteps(200, 5) == [200, 150, 100, 51, 1, 0]


@pytest.mark.parametrize("kind", ["bulge", "sink", "damage"])
def test_patch_gen_moves_one_patch(kind):
    pts = ellipsoid(2048) / 40.0
    r = patch_gen(pts, np.random.default_rng(1), ratio=1 / 32, scale=0.1, kind=kind)
    moved = np.linalg.norm(r.anomalous - r.clean, axis=1) > 0
    assert r.mask.sum() == 64 and np.array_equal(moved, r.mask)
    np.testing.assert_allclose(np.linalg.norm(r.clean, axis=1), np.linalg.norm(pts, axis=1), rtol=1e-5)  # rotation
    order = np.argsort(np.linalg.norm(r.clean[r.mask] - r.viewpoint, axis=1))
    rest = np.linalg.norm(r.clean[~r.mask] - r.viewpoint, axis=1)
    assert np.linalg.norm(r.clean[r.mask] - r.viewpoint, axis=1).max() <= rest.min()  # the nearest points
    direction = r.clean[r.mask] - r.viewpoint
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    disp = (r.anomalous - r.clean)[r.mask]
    along = (disp * direction).sum(1)
    factors = np.abs(disp / direction)[order]  # |T| per axis, from the patch centre outwards
    if kind == "sink":
        assert (along > 0).all()  # away from the viewpoint, into the part
    elif kind == "bulge":
        assert (along < 0).all()  # towards the viewpoint, out of the part
    else:
        assert (along > 0).any() and (along < 0).any()
    is_sorted = (np.diff(factors, axis=0) <= 1e-4).all()
    assert is_sorted == (kind != "damage")


def test_patch_gen_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        patch_gen(np.zeros((10, 2), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="kind"):
        patch_gen(np.zeros((10, 3), np.float32), np.random.default_rng(0), kind="dent")


def test_training_loss_decreases():
    torch.manual_seed(0)
    model = R3DAD(TINY.arch)
    rng = np.random.default_rng(0)
    pairs = [patch_gen(ellipsoid(128) / 40.0, rng, ratio=1 / 8, max_angle=0.0) for _ in range(4)]
    clean, bad = (torch.from_numpy(np.stack([getattr(r, k) for r in pairs])) for k in ("clean", "anomalous"))
    t = torch.tensor([1, 3, 6, 10])  # low noise: Delta_t carries the answer, so a few steps must learn it

    def loss() -> float:
        torch.manual_seed(1)
        return model.get_loss(clean, bad, t).item()

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        model.get_loss(clean, bad, t).backward()
        opt.step()
    assert loss() < 0.6 * before


def test_samplers():
    torch.manual_seed(0)
    model = R3DAD(TINY.arch).eval()
    torch.nn.init.normal_(model.net.layers[-1].layer.weight, std=0.5)  # a non-trivial (not all-zero) displacement
    pts = torch.from_numpy(ellipsoid(128) / 40.0)[None]
    with torch.no_grad():
        g = InferenceGraph(model, 128)
        a, b = g(pts[0])[0], g(pts[0])[0]
        s1 = model.sample_ddpm(pts, torch.Generator().manual_seed(0))
        s2 = model.sample_ddpm(pts, torch.Generator().manual_seed(1))
    assert a.shape == (128, 3) and torch.equal(a, b)
    assert s1.shape == (1, 128, 3) and not torch.allclose(s1, s2)


def test_graph_has_no_random_ops(tmp_path):
    """Exported by edgead's own exporter (torch.export-based, as `edgead export` does; the legacy TorchScript
    exporter is deprecated): no random or control-flow op, nothing outside the allow-list, and ONNX Runtime gives
    PyTorch's reconstruction."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from edgead.export import onnx as onnx_export

    graph = InferenceGraph(R3DAD(TINY.arch), 128).eval()
    x = torch.from_numpy(ellipsoid(128) / 40.0)
    path = tmp_path / "r3dad.onnx"
    onnx_export.export(graph, {"points": x.numpy()}, path)
    assert onnx_export.check_graph(path) == []
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"points": x.numpy()})[0]
    np.testing.assert_allclose(out, graph(x)[0].detach().numpy(), atol=1e-4)


def test_scores_and_propagation():
    pts = ellipsoid(300) / 40.0
    assert np.allclose(cluster_distance(pts, pts, 8), 0)
    patch = np.argsort(np.linalg.norm(pts - pts[0], axis=1))[:12]
    bumped = pts.copy()
    bumped[patch] *= 1.3  # a bulge in the input; the reconstruction (point by point) is the normal shape
    d = cluster_distance(bumped, pts, 4)
    assert d[patch].mean() > 0.1 and np.median(np.delete(d, patch)) == 0
    flying = pts.copy()
    flying[7] *= 1.3  # one isolated point moved: diluted by its cluster of 4
    assert cluster_distance(flying, pts, 4)[7] == pytest.approx(0.5 * np.linalg.norm(flying[7] - pts[7]), rel=1e-5)
    sub_idx = subsample_indices(pts, 64)
    assert len(np.unique(sub_idx)) == 64
    s = np.arange(64, dtype=np.float32)
    np.testing.assert_allclose(propagate(pts[sub_idx], pts[sub_idx], s), s, atol=1e-3)
    assert np.array_equal(subsample_indices(pts[:10], 64)[:10], np.arange(10))  # small clouds repeat points


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("r3dad_run")
    T.train([ellipsoid(3000, s) for s in range(2)], out, TrainOptions(progress=False), tiny(steps=3, ckpt_every=2))
    return out


def test_run_dir_loads_and_detects(run_dir):
    doc = json.loads((run_dir / "model.json").read_text())
    assert doc["name"] == "r3dad" and len(doc["model_hash"]) == 64 and doc["kind"] == "r3dad"
    assert doc["arch"] == TINY.arch.to_dict() | {"hidden": [32, 32], "encoder": [32, 64]}
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) == 3
    assert (run_dir / "checkpoints" / "last.pt").exists()
    det = EdgeDetector.load(run_dir)
    x = ellipsoid(2000, 7, offset=(-500.0, 20.0, 80.0))
    r1, r2 = det.detect(x), det.detect(x)
    assert r1.point_scores.shape == (2000,) and np.isfinite(r1.point_scores).all()
    assert np.array_equal(r1.point_scores, r2.point_scores) and r1.score == r2.score
    assert r1.score == pytest.approx(object_score(x, r1.point_scores))
    small = det.detect(ellipsoid(300, 3))  # fewer points than the network's M: repeated, every point scored
    assert small.point_scores.shape == (300,) and np.isfinite(small.point_scores).all()
    with pytest.raises(NotInspected, match="surface cells"):
        det.detect(ellipsoid(20, 3))  # 20 points see too little of the part to judge it
    with_nan = x[:1500].copy()
    with_nan[5] = np.nan
    r = det.detect(with_nan)
    assert np.isnan(r.point_scores[5]) and np.isfinite(np.delete(r.point_scores, 5)).all()
    with pytest.raises(ValueError, match="at least"):
        det.detect(x[:3])


def test_resume_continues(run_dir):
    T.train([ellipsoid(3000, s) for s in range(2)], run_dir, TrainOptions(resume=True, progress=False),
            tiny(steps=4, ckpt_every=2))
    steps = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_bad_state_is_a_value_error():
    with pytest.raises(ValueError, match="incomplete"):
        build_pipeline("r3dad", {}, {})
    with pytest.raises(ValueError, match="preset"):
        T.preset("gpu")
