"""The clients in examples/ against a real service on loopback, and `edgead demo` end to end."""

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from stream_helpers import part, recv, running_service, wait_status

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


def test_plc_gateway_maps_results_to_integer_records():
    gateway = load_example("plc_gateway")
    with running_service(policy="every", queue=16) as (service, sensor, client):
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / "plc_gateway.py"), "--sub", service.pub_endpoint,
                                 "--sensor", "cam", "--count", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert "connected" in proc.stderr.readline()  # it has seen a status message: subscribed
            for parts in frames_to_send():
                sensor.send_multipart(parts)
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in records] == [gateway.OK, gateway.REJECT, gateway.ERROR, gateway.ERROR]
    assert all(isinstance(v, int) for r in records for v in r.values())
    bad = records[1]  # the bump at (8, 5, ~12) mm on the block
    assert bad["seq"] == 1 and abs(bad["defect_x_mm10"] - 80) < 10 and abs(bad["defect_y_mm10"] - 50) < 10
    assert bad["n_regions"] >= 1 and bad["score_x1000"] > 3000 and records[0]["n_regions"] == 0


class TinyBroker:
    """Just enough of an MQTT 3.1.1 broker to receive what a client publishes: CONNECT, PUBLISH (QoS 0/1),
    PINGREQ, DISCONNECT."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.published: list[tuple[str, bytes, int, bool]] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.server.accept()
        with conn, conn.makefile("rb") as f:
            while True:
                head = f.read(1)
                if not head:
                    return
                length, shift = 0, 0
                while True:  # remaining length: a base-128 varint
                    b = f.read(1)[0]
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = f.read(length)
                kind, flags = head[0] >> 4, head[0] & 0x0F
                if kind == 1:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH
                    n = int.from_bytes(body[:2], "big")
                    topic, qos, rest = body[2:2 + n].decode(), (flags >> 1) & 3, body[2 + n:]
                    if qos:
                        conn.sendall(b"\x40\x02" + rest[:2])  # PUBACK with the packet id
                        rest = rest[2:]
                    self.published.append((topic, rest, qos, bool(flags & 1)))
                elif kind == 12:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    return


def test_mqtt_bridge_publishes_results_and_verdicts():
    broker = TinyBroker()
    with running_service(policy="every", queue=16) as (service, sensor, client):
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / "mqtt_bridge.py"), "--sub", service.pub_endpoint,
                                 "--broker", "127.0.0.1", "--port", str(broker.port), "--root", "line7",
                                 "--count", "2"], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not any(t == "line7/status" for t, *_ in broker.published):  # the bridge is subscribed
                assert time.monotonic() < deadline and proc.poll() is None, "the bridge did not come up"
                time.sleep(0.05)
            for parts in frames_to_send()[1:3]:
                sensor.send_multipart(parts)
            assert proc.wait(30) == 0, proc.stderr.read()
        finally:
            proc.kill()
    topics = [(t, q, r) for t, _, q, r in broker.published]
    assert ("line7/cam/result", 1, False) in topics and ("line7/cam/verdict", 1, True) in topics
    verdicts = [p.decode() for t, p, _, _ in broker.published if t == "line7/cam/verdict"]
    assert verdicts == ["reject", "error"]
    result = json.loads(next(p for t, p, _, _ in broker.published if t == "line7/cam/result"))
    assert result["seq"] == 1 and result["anomalous"] is True and "point_scores" not in result


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
