import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engine_helpers import KINDS, part, trained_and_exported  # noqa: E402

from edgead import ops  # noqa: E402
from edgead.detectors.scoring import Scoring  # noqa: E402
from edgead.export import export_run, trt  # noqa: E402
from edgead.export import onnx as onnx_export  # noqa: E402
from edgead.formats.digest import sha256_file  # noqa: E402
from edgead.runtime import EdgeDetector  # noqa: E402

# ONNX Runtime vs PyTorch, FP32, same feeds: reconstruction in normalised units, scores in mm (parts ~80 mm).
RECON_ATOL, SCORE_ATOL = 1e-4, 1e-3


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    run, out = trained_and_exported(tmp_path_factory.getbasetemp(), request.param)
    return request.param, run, out, json.loads((out / f"{request.param}.json").read_text())


def test_manifest_describes_and_hashes_every_file(exported):
    kind, run, out, doc = exported
    assert doc["kind"] == kind and doc["format"] == "edgead-engine/2" and len(doc["model_hash"]) == 64
    assert {f"{kind}.onnx", f"{kind}.fp16.onnx", f"{kind}.npz"} <= set(doc["files"])
    for fname, digest in doc["files"].items():
        assert sha256_file(out / fname) == digest
    assert doc["engines"]["onnx"]["precision"] == "fp32" and doc["preset"] == {"dusnet": "tiny", "r3dad": "cpu"}[kind]
    assert doc["pipeline"]["normalization"]["scale"] > 0 and doc["source_model_hash"] != doc["model_hash"]
    names = {"dusnet": ["patches", "centers"], "r3dad": ["points"]}[kind]
    assert [t["name"] for t in doc["inputs"]] == names and doc["outputs"][0]["name"] == "recon"
    assert all(t["dtype"] == "float32" and all(d > 0 for d in t["shape"]) for t in doc["inputs"] + doc["outputs"])
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(doc["versions"])
    if shutil.which("nvcc"):
        assert {"edgead_fps.ptx", "edgead_knn.ptx"} <= set(doc["files"])
        assert doc["kernels"]["ptx_isa"] and doc["kernels"]["min_driver"]


def test_export_time_parity_within_tolerance(exported):
    kind, _, _, doc = exported
    fp32 = doc["parity"]["onnx_fp32_vs_torch"]
    assert fp32["recon_max_abs"] < RECON_ATOL and fp32["score_max_abs"] < SCORE_ATOL, fp32
    assert fp32["score_max_ref"] > 10 * SCORE_ATOL  # the comparison is not between two near-zero score maps


@pytest.mark.parametrize("fname", ["{}.onnx", "{}.fp16.onnx"])
def test_graphs_fit_tensorrt(exported, fname):
    kind, _, out, _ = exported
    path = out / fname.format(kind)
    assert onnx_export.check_graph(path) == []
    ops = set(onnx_export.op_types(path))
    assert ops <= onnx_export.ALLOWED_OPS and not ops & (onnx_export.RANDOM_OPS | onnx_export.CONTROL_FLOW)


def test_graph_check_catches_random_ops_large_topk_and_loops(tmp_path):
    import torch

    class Bad(torch.nn.Module):
        input_names, output_names = ("x",), ("y", "i")

        def forward(self, x):
            vals, idx = (x + torch.randn_like(x)).reshape(-1).topk(4000)
            return vals, idx

    onnx_export.export(Bad().eval(), {"x": np.zeros((50, 100), np.float32) + 1}, tmp_path / "bad.onnx")
    problems = " | ".join(onnx_export.check_graph(tmp_path / "bad.onnx"))
    assert "random op RandomNormalLike" in problems and "K = 4000" in problems

    import onnx
    from onnx import TensorProto, helper

    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["x"], [name])], name, [], [helper.make_tensor_value_info(name, 1, [1])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("t"), else_branch=branch("e"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [1]),
                                            helper.make_tensor_value_info("x", 1, [1])],
                              [helper.make_tensor_value_info("y", 1, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "if.onnx")
    assert onnx_export.check_graph(tmp_path / "if.onnx") == ["control flow op If"]


def test_onnx_detector_matches_torch_on_a_new_frame(exported):
    kind, run, out, _ = exported
    frame = part(n=9000, seed=11, bump=True) + np.float32(250)
    ref = EdgeDetector.load(run).detect(frame)
    det = EdgeDetector.load(out / f"{kind}.onnx")
    got = det.detect(frame)
    assert det.backend == "onnx" and ref.point_scores.shape == got.point_scores.shape == (9000,)
    np.testing.assert_allclose(got.point_scores, ref.point_scores, atol=SCORE_ATOL)
    assert abs(got.score - ref.score) < SCORE_ATOL
    again = det.detect(frame)  # deterministic
    np.testing.assert_array_equal(again.point_scores, got.point_scores)


def test_fp16_graph_numerics(exported):
    """FP16 weights and arithmetic (ONNX Runtime CPU on NAME.fp16.onnx): finite and near the FP32 results."""
    kind, _, _, doc = exported
    fp16 = doc["parity"]["onnx_fp16_vs_torch"]
    assert np.isfinite(list(fp16.values())).all(), fp16
    # scores within 5 % of the largest score, or 0.01 mm (far below sensor noise) for a barely trained model whose
    # scores are themselves hundredths of a mm
    assert fp16["recon_max_abs"] < 0.05 and fp16["score_mean_abs"] < max(0.05 * fp16["score_max_ref"], 0.01), fp16


@pytest.mark.parametrize("victim", ["{}.onnx", "{}.npz"])
def test_refuses_files_whose_hash_does_not_match(exported, tmp_path, victim):
    kind, _, out, _ = exported
    for f in out.glob(f"{kind}*"):
        shutil.copy(f, tmp_path / f.name)
    target = tmp_path / victim.format(kind)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        EdgeDetector.load(tmp_path / f"{kind}.onnx")


def test_missing_manifest_is_a_clear_error(exported, tmp_path):
    kind, _, out, _ = exported
    shutil.copy(out / f"{kind}.onnx", tmp_path / f"{kind}.onnx")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        EdgeDetector.load(tmp_path / f"{kind}.onnx")


def test_trt_format_without_tensorrt_fails_and_writes_nothing(exported, tmp_path):
    if trt.unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present here: a plan would be built")
    _, run, _, _ = exported
    with pytest.raises(RuntimeError, match="TensorRT"):
        export_run(run, tmp_path / "engines", "x", "trt")
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_format_all_keeps_the_onnx_engines_when_the_tensorrt_build_fails(exported, tmp_path, monkeypatch):
    """TensorRT's builder raising (here made to, on a machine that may have no TensorRT) costs the plan only."""
    _, run, _, _ = exported

    def failing_build(*args):
        raise RuntimeError("no layer implementation for TopK")

    monkeypatch.setattr(trt, "unavailable_reason", lambda: None)
    monkeypatch.setattr(trt, "build", failing_build)
    doc = export_run(run, tmp_path, "x", "all")
    assert doc["trt_skipped"] == "TensorRT build failed: no layer implementation for TopK"
    assert "plan" not in doc["engines"] and not (tmp_path / "x.plan").exists()
    assert EdgeDetector.load(tmp_path / "x.onnx").backend == "onnx"


INSPECTOR_TRT10 = {"Layers": [
    {"Name": "a", "Outputs": [{"Name": "t", "Format/Datatype": "Row major linear FP16 format"}]},
    {"Name": "b", "Outputs": [{"Name": "u", "Format/Datatype": "Row major linear FP32"}]}]}
INSPECTOR_TRT11 = {"Layers": [
    {"Name": "a", "Outputs": [{"Name": "t", "Format": "Row major linear", "Datatype": "Half"}]},
    {"Name": "b", "Outputs": [{"Name": "u", "Format": "Row major linear", "Datatype": "Float"}]},
    "a layer TensorRT only names"]}


def test_fp16_check_reads_both_tensorrt_inspector_shapes():
    assert trt.half_layers(INSPECTOR_TRT10) == (1, 2)
    assert trt.half_layers(INSPECTOR_TRT11) == (1, 2)
    assert trt.half_layers({"Layers": [{"Outputs": [{"Datatype": "Float"}]}]}) == (0, 1)


def test_export_rejects_bad_requests(exported, tmp_path):
    _, run, _, _ = exported
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "e")
    with pytest.raises(ValueError, match="tflite"):
        export_run(run, tmp_path / "e", fmt="tflite")
    with pytest.raises(ValueError, match="engine name"):
        export_run(run, tmp_path / "e", name="../evil")
    with pytest.raises(ValueError, match="score-voxel"):
        export_run(run, tmp_path / "e", score_voxel=-1.0)


def test_score_voxel_chosen_at_export(exported, tmp_path):
    """The run's voxel scoring spreads one score over each voxel; ``--score-voxel 0`` scores every point."""
    kind, run, out, doc = exported
    assert doc["pipeline"]["config"]["score_voxel"] > 0
    export_run(run, tmp_path, kind, "onnx", score_voxel=0.0)
    exact_doc = json.loads((tmp_path / f"{kind}.json").read_text())
    assert exact_doc["pipeline"]["config"]["score_voxel"] == 0.0
    frame = part(n=40_000, seed=12, bump=True)
    det, exact_det = EdgeDetector.load(out / f"{kind}.onnx"), EdgeDetector.load(tmp_path / f"{kind}.onnx")
    for d in (det, exact_det):  # the raw scores: the robust-scoring rules then run on whichever points were scored
        d.pipeline.config = replace(d.pipeline.config, scoring=Scoring.off())
    voxel = det.detect(frame).point_scores
    exact = exact_det.detect(frame).point_scores
    _, context, _ = det.pipeline.preprocess(frame)
    x = context if kind == "dusnet" else context[0]  # the frame in the model's normalised coordinates
    reps, owner = ops.voxel_representatives(x, doc["pipeline"]["config"]["score_voxel"])
    assert len(reps) < 0.8 * len(frame)  # 40k points on an 80 mm part share voxels
    np.testing.assert_array_equal(voxel[reps], exact[reps])  # representatives: the exact score ...
    np.testing.assert_array_equal(voxel, voxel[reps][owner])  # ... spread over their voxel
