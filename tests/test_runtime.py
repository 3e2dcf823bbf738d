import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engine_helpers import part, trained_and_exported  # noqa: E402

from edgead.detectors import build_pipeline  # noqa: E402
from edgead.export import export_run, trt  # noqa: E402
from edgead.formats.digest import sha256_file  # noqa: E402
from edgead.formats.engine import read_engine, write_manifest  # noqa: E402
from edgead.runtime import EdgeDetector  # noqa: E402
from edgead.tools import bench  # noqa: E402
from edgead.train import train  # noqa: E402


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return {k: trained_and_exported(tmp_path_factory.getbasetemp(), k) for k in ("dusnet", "r3dad")}


def test_onnx_runtime_path_never_imports_torch(engines, tmp_path):
    frame_path = tmp_path / "frame.npy"
    np.save(frame_path, part(seed=5))
    code = (
        "import sys, numpy as np\n"
        "from edgead import EdgeDetector\n"
        "for path in sys.argv[2:]:\n"
        "    r = EdgeDetector.load(path).detect(np.load(sys.argv[1]))\n"
        "    assert np.isfinite(r.point_scores).all() and r.score > 0\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print('TORCH' if bad else 'CLEAN')\n"
    )
    paths = [str(out / f"{kind}.onnx") for kind, (_, out) in engines.items()]
    proc = subprocess.run([sys.executable, "-c", code, str(frame_path), *paths], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CLEAN"


def test_same_result_fields_as_the_torch_backend(engines):
    run, out = engines["r3dad"]
    frame = part(seed=3)
    frame[7] = np.nan  # a dropped row is reported the same way
    a, b = EdgeDetector.load(run).detect(frame), EdgeDetector.load(out / "r3dad.onnx").detect(frame)
    assert vars(a).keys() == vars(b).keys()
    assert np.isnan(b.point_scores[7]) and b.n_dropped == a.n_dropped == 1
    assert set(b.timings_ms) == {"preprocess", "network", "postprocess", "total"}


def test_bad_frames_and_devices_are_clear_errors(engines):
    det = EdgeDetector.load(engines["dusnet"][1] / "dusnet.onnx")
    with pytest.raises(ValueError, match="shape"):
        det.detect(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="finite points"):
        det.detect(np.full((10, 3), np.nan, np.float32))
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="no CUDA provider"):
            EdgeDetector.load(engines["dusnet"][1] / "dusnet.onnx", device="cuda")


def test_plan_with_wrong_hash_is_refused_before_tensorrt(engines, tmp_path):
    """The sha256 check runs before TensorRT is imported, so it is tested here too."""
    out = engines["r3dad"][1]
    doc = json.loads((out / "r3dad.json").read_text())
    for f in ["r3dad.npz", *(f for f in doc["files"] if f.startswith("edgead_"))]:  # arrays, compiled kernels
        (tmp_path / f).write_bytes((out / f).read_bytes())
    (tmp_path / "r3dad.plan").write_bytes(b"not the plan the manifest hashed")
    doc["files"]["r3dad.plan"] = "0" * 64
    write_manifest(tmp_path / "r3dad.json", doc)
    with pytest.raises(ValueError, match="sha256"):
        EdgeDetector.load(tmp_path / "r3dad.plan")
    doc["files"]["r3dad.plan"] = sha256_file(tmp_path / "r3dad.plan")
    write_manifest(tmp_path / "r3dad.json", doc)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="TensorRT"):
            EdgeDetector.load(tmp_path / "r3dad.plan")


def test_an_edited_manifest_field_is_refused(engines, tmp_path):
    out = engines["dusnet"][1]
    for f in ("dusnet.onnx", "dusnet.npz"):
        (tmp_path / f).write_bytes((out / f).read_bytes())
    doc = json.loads((out / "dusnet.json").read_text())
    doc["pipeline"]["normalization"]["scale"] *= 1.01  # a 1 % change of the scale moves every score
    (tmp_path / "dusnet.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="content hash"):
        EdgeDetector.load(tmp_path / "dusnet.onnx")


@pytest.fixture(scope="module")  # module scope: set up (and skipped) before the module-scoped engines are trained
def gpu_geometry(tmp_path_factory):
    """CudaOps on GPU 0 with freshly compiled kernels; skips without a GPU."""
    pytest.importorskip("pycuda", reason="pycuda not installed")
    from edgead.export.kernels import compile_kernels, gpu_arch

    folder = tmp_path_factory.mktemp("kernels")
    if gpu_arch() is None or compile_kernels(folder) is None:
        pytest.skip("no CUDA GPU or no nvcc here")
    from edgead.runtime.cuda_ops import CudaOps, GpuContext

    return CudaOps(folder, GpuContext(0))


@pytest.fixture(scope="module")
def tensorrt_here():
    reason = trt.unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.gpu
def test_cuda_ops_detector_equals_the_cpu_pipeline(gpu_geometry, engines):
    """A detector end to end with the geometry on the GPU (CudaOps through pycuda, the network on ONNX Runtime) gives
    the CPU pipeline's result bit for bit: same FPS, same neighbours, same scores."""
    geometry = gpu_geometry
    for kind in ("dusnet", "r3dad"):
        cpu = EdgeDetector.load(engines[kind][1] / f"{kind}.onnx")
        engine = read_engine(engines[kind][1] / f"{kind}.onnx")
        gpu = EdgeDetector(build_pipeline(kind, engine.doc["pipeline"], engine.arrays, geometry), cpu.runner,
                           backend=cpu.backend, name=cpu.name, model_hash=cpu.model_hash)
        frame = part(n=20000, seed=11, bump=True)
        a, b = cpu.detect(frame), gpu.detect(frame)
        np.testing.assert_array_equal(a.point_scores, b.point_scores, err_msg=kind)
        assert a.score == b.score


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["dusnet", "r3dad"])
def test_tensorrt_matches_onnx_runtime(tensorrt_here, engines, kind, tmp_path):
    run, _ = engines[kind]
    export_run(run, tmp_path, kind, "all")
    frame = part(n=20000, seed=9, bump=True)
    ref = EdgeDetector.load(tmp_path / f"{kind}.onnx").detect(frame)
    got = EdgeDetector.load(tmp_path / f"{kind}.plan").detect(frame)
    # FP16 engine vs FP32 ONNX Runtime: the bound measured for the FP16 ONNX graph on the CPU (docs/export.md).
    scale = float(np.nanmax(ref.point_scores))
    assert np.nanmean(np.abs(got.point_scores - ref.point_scores)) < 0.05 * scale
    assert abs(got.score - ref.score) < 0.1 * scale


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    """A template run directory and the folder of the normal scans it was trained on."""
    root = tmp_path_factory.mktemp("template_bench")
    scans = [part(seed=s) for s in range(3)]
    for i, scan in enumerate(scans):
        np.save(root / f"scan{i}.npy", scan)
    train("template", scans, root / "run")
    return root / "run", root


@pytest.mark.parametrize("kind", ["dusnet", "r3dad", "template"])
def test_bench_reports_every_stage_for_the_engine_and_both_references(engines, template_run, kind, tmp_path):
    """``edgead bench`` end to end on every detector (an exported engine; the template's run directory): stages,
    frames/s, the interleaved plain k-d tree pass and the ratio to it, stored state, RSS, and the PyTorch
    references where there is a network. Figures, not targets (timing is not asserted)."""
    report_file = tmp_path / "bench.json"
    if kind == "template":
        engine, data = template_run
        extra = ["--data", str(data)]
    else:
        run, out = engines[kind]
        engine, extra = out / f"{kind}.onnx", []
    cmd = [sys.executable, "-m", "edgead", "bench", str(engine), "--points", "20000", "--frames", "2",
           "--reference-frames", "1", "--threads", "1", "--json", str(report_file), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    assert report["points"] == 20000 and report["kind"] == kind and len(report["load_average"]) == 3
    assert report["kd_pass_stats"]["p95"] >= report["kd_pass_stats"]["median"] > 0
    assert report["ratio_to_kd_pass"] == pytest.approx(report["engine_stats"]["total"]["median"]
                                                       / report["kd_pass_stats"]["median"])
    assert report["peak_rss_mb_engine"] > 0 and "plain k-d tree pass" in proc.stdout and "frames/s" in proc.stdout
    references = ("torch_eager_stats", "torch_numpy_geometry_stats")
    if kind == "template":  # no network: no PyTorch reference; the pass builds its tree on the 3 training scans
        assert report["kd_union_points"] == 3 * len(part()) and not set(references) & set(report)
        assert 0 < report["state_mb"]["grid"] < report["state_mb"]["total"] <= 64 + 1
        return
    assert report["reference"] == str(run) and report["state_mb"]["grid"] == 0
    for key in ("engine_stats", *references):
        stats = report[key]
        assert all(stats[s]["median"] > 0 and stats[s]["p95"] >= stats[s]["median"] for s in bench.STAGES), key
        assert stats["fps"] == pytest.approx(1000 / stats["total"]["median"])
    assert report["speedup_vs_torch_eager"] > 0 and "every point scored" in proc.stdout
