"""The clients in examples/ against a real service on loopback, and `edgead demo` end to end."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
from stream_helpers import free_port, part, recv, running_service, wait_status

from edgead.stream.protocol import STATUS_TOPIC, encode_frame

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unbin(x):
    """The JS subscriber's JSON form of msgpack bin values back to bytes."""
    if isinstance(x, dict):
        return base64_bytes(x["$bin"]) if set(x) == {"$bin"} else {k: unbin(v) for k, v in x.items()}
    return [unbin(v) for v in x] if isinstance(x, list) else x


def base64_bytes(s):
    import base64

    return base64.b64decode(s)


def frames_to_send():
    return [encode_frame(part(1), 0, "cam"), encode_frame(part(2, defect=True), 1, "cam"),
            [b"edgead/frame/cam", b"\xc1", b""], encode_frame(np.full((9, 3), np.nan, np.float32), 3, "cam")]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_subscriber_decodes_every_result_exactly_as_python_does():
    sent = frames_to_send()
    with running_service(policy="every", queue=16, point_scores=True) as (service, sensor, client):
        proc = subprocess.Popen(["node", str(EXAMPLES / "subscriber.js"), service.pub_endpoint, "edgead/",
                                 "--count", str(len(sent))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert "connected" in proc.stderr.readline()
            first = json.loads(proc.stdout.readline())  # a status message: its subscription is live
            assert first["topic"] == STATUS_TOPIC and first["msg"]["type"] == "status"
            wait_status(client)
            for parts in sent:
                sensor.send_multipart(parts)
            expected = []
            while len(expected) < len(sent):
                topic, msg = recv(client)
                if topic != STATUS_TOPIC:
                    expected.append((topic, msg))
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    got = [(d["topic"], unbin(d["msg"])) for d in lines if d["topic"] != STATUS_TOPIC]
    assert got == expected  # every field, including the per-point score bytes
    assert [m["status"] for _, m in got] == ["ok", "ok", "error", "error"]
    assert got[1][1]["anomalous"] is True and got[1][1]["regions"]


def test_opcua_plc_example_lets_only_judged_good_parts_through():
    """examples/opcua_plc.py (the PLC's handshake) against `edgead bridge opcua` and a real service."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgead/"
    procs = []
    try:
        with running_service(policy="every", queue=16) as (service, sensor, client):
            wait_status(client)
            procs.append(subprocess.Popen([sys.executable, "-m", "edgead", "bridge", "opcua", "--sub",
                                           service.pub_endpoint, "--endpoint", url, "--metrics", "127.0.0.1:0"],
                                          stderr=subprocess.PIPE, text=True))
            metrics = re.search(r"metrics on (\S+)", procs[0].stderr.readline()).group(1)
            deadline = time.monotonic() + 20
            while "edgead_bridge_statuses_total 0.0" in urllib.request.urlopen(metrics).read().decode():
                assert time.monotonic() < deadline, "the bridge never heard from the service"
                time.sleep(0.05)
            procs.append(subprocess.Popen([sys.executable, str(EXAMPLES / "opcua_plc.py"), "--endpoint", url,
                                           "--sensor", "cam", "--count", "4"], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
            assert "connected" in procs[1].stderr.readline()
            records = []
            for parts in frames_to_send():  # one part at a time, as a line does
                sensor.send_multipart(parts)
                records.append(json.loads(procs[1].stdout.readline()))
            assert procs[1].wait(30) == 0
    finally:
        for proc in procs:
            proc.kill()
    assert [r["go"] for r in records] == [True, False, False, False]
    assert records[0]["inspection_id"] == 0 and records[0]["defect_mm"] is None and records[0]["error"] == ""
    bad = records[1]  # the bump at (8, 5, ~12) mm on the block
    assert bad["score"] > 3 and abs(bad["defect_mm"][0] - 8) < 1 and abs(bad["defect_mm"][1] - 5) < 1
    assert records[2]["inspection_id"] is None and "msgpack" in records[2]["error"]  # no seq to match: no go
    assert records[3]["inspection_id"] == 3 and records[3]["score"] is None and records[3]["error"]


def test_controller_embeds_the_detector():
    controller = load_example("controller")
    from stream_helpers import detector

    gate = []
    decisions = controller.control_loop(detector(), [("a", part(1)), ("b", part(2, defect=True)),
                                                     ("c", part(3)[:3])], gate.append)
    assert decisions == gate == [False, True, True]  # an unusable scan is rejected, not passed


@pytest.mark.skipif(not (EXAMPLES.parent / "engines" / "demo" / "model.json").exists(), reason="no demo engine")
def test_edgead_demo_runs_by_itself():
    out = subprocess.run([sys.executable, "-m", "edgead", "demo", "--frames", "3", "--rate", "20"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    results = [line for line in lines if line.startswith("#")]
    assert [r.split()[2] for r in results] == ["part0000-good", "part0001-good", "part0002-bulge"]
    assert all("score" in r for r in results)
    assert "3 results (0 errors), 0 dropped" in lines[-1]


def test_results_use_plain_msgpack_types_only():
    """No ext types anywhere: decoding with ext types refused succeeds on real results and status."""
    with running_service(policy="every", queue=4, point_scores=True) as (service, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(part(2, defect=True), 0, "cam"))
        raw = []
        while len(raw) < 2:
            if client.poll(10_000):
                raw.append(client.recv_multipart())
    for _, payload in raw:
        msgpack.unpackb(payload, ext_hook=lambda code, data: pytest.fail(f"ext type {code}"), strict_map_key=True)


@pytest.mark.skipif(not (EXAMPLES.parent / "engines" / "demo" / "model.json").exists(), reason="no demo engine")
def test_demo_threshold_was_calibrated_for_the_shipped_engine():
    from edgead.runtime import EdgeDetector
    from edgead.tools.demo import ENGINE, THRESHOLD

    doc = json.loads(THRESHOLD.read_text())
    assert doc["model_hash"] == EdgeDetector.load(ENGINE).model_hash  # else: python engines/make_demo.py
    assert doc["method"] == "f1" and doc["n_normal"] > 0 and doc["n_anomalous"] > 0
