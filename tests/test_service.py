import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from stream_helpers import detector, part, recv, recv_result, running_service, template_run, wait_status

from edgead import NotInspected
from edgead.formats.scene import crop
from edgead.stream import protocol
from edgead.stream.protocol import encode_frame
from edgead.stream.service import Service, ServiceConfig, ServiceFailure
from edgead.tools.calibrate import calibrate_scene


def test_results_carry_score_regions_and_identity_and_are_deterministic():
    det = detector()
    frame = part(3, defect=True)
    with running_service(det, policy="every", queue=16, point_scores=True) as (_, sensor, client):
        wait_status(client)
        for seq in (10, 11):
            sensor.send_multipart(encode_frame(frame, seq, "cam1", t_capture=123.0))
        a, b = recv_result(client), recv_result(client)
    assert (a["seq"], b["seq"]) == (10, 11) and b["result_seq"] == a["result_seq"] + 1
    assert a["status"] == "ok" and a["error"] == "" and a["sensor"] == "cam1" and a["frame_id"] == "cam1-10"
    assert a["t_capture"] == 123.0 and a["t_received"] <= a["t_published"]
    assert a["anomalous"] is True and a["threshold"] == 2.0 and a["score"] > 3.0
    assert a["model_name"] == "template" and a["model_hash"] == det.model_hash != "" and a["backend"] == "numpy"
    assert {"decode", "preprocess", "network", "postprocess", "regions", "total"} <= set(a["latency_ms"])
    region = a["regions"][0]  # the 4 mm bump at (8, 5) on the top face (z = 10), in mm
    np.testing.assert_allclose(region["centroid"][:2], [8, 5], atol=1.0)
    assert region["centroid"][2] > 12 and region["n_points"] >= 20 and region["extent"][0] < 8
    expected = det.detect(frame)
    scores = protocol.point_scores(a)
    np.testing.assert_array_equal(scores, expected.point_scores)  # same frame, same result, bit for bit
    np.testing.assert_array_equal(scores, protocol.point_scores(b))
    assert a["score"] == b["score"] == expected.score and a["regions"] == b["regions"]


def bad_frames():
    good = part(0)
    header = msgpack.unpackb(encode_frame(good, 1, "cam")[1])
    nan = np.full((100, 3), np.nan, np.float32)
    return [
        ("nan", encode_frame(nan, 2, "cam"), "no points|finite"),
        ("empty", encode_frame(np.zeros((0, 3), np.float32), 3, "cam"), "no points"),
        ("oversized", encode_frame(part(0, n=4000), 4, "cam"), "more than the limit"),
        ("dtype", [b"edgead/frame/cam", msgpack.packb({**header, "seq": 5, "dtype": "int32"}), bytes(12)], "dtype"),
        ("size", [b"edgead/frame/cam", msgpack.packb({**header, "seq": 6}), bytes(12)], "point buffer"),
        ("few", encode_frame(good[:5], 7, "cam"), "at least"),
    ]


def test_bad_frames_get_error_results_and_the_service_goes_on():
    cases = bad_frames()
    with running_service(policy="every", queue=32, max_points=3000) as (service, sensor, client):
        wait_status(client)
        for _, parts, _ in cases:
            sensor.send_multipart(parts)
        sensor.send_multipart([b"edgead/frame/cam", b"only two parts"])
        sensor.send_multipart(encode_frame(part(1), 99, "cam"))
        results = [recv_result(client) for _ in range(len(cases) + 2)]
        status = wait_status(client)
    for (name, _, reason), res, seq in zip(cases, results, range(2, 8), strict=False):
        assert res["status"] == "error" and re.search(reason, res["error"]), (name, res["error"])
        assert res["seq"] == seq and res["sensor"] == "cam" and res["score"] is None and res["anomalous"] is None
    assert results[-2]["status"] == "error" and results[-2]["seq"] is None and "3 parts" in results[-2]["error"]
    assert results[-1]["status"] == "ok" and results[-1]["seq"] == 99 and results[-1]["anomalous"] is False
    assert status["errors"] == len(cases) + 1 and status["frames_out"] == len(cases) + 2


def test_a_message_over_the_size_limit_costs_only_its_connection():
    """A frame over MAX_MESSAGE_BYTES: ZeroMQ drops the sensor connection instead of buffering it (and would not
    reconnect by itself), the service connects and subscribes again, and the next frame is processed as usual."""
    huge = np.zeros((protocol.MAX_MESSAGE_BYTES // 12 + 1024, 3), np.float32)
    # XPUB_VERBOSE: if the new connection subscribes before the sensor has noticed that the old one is gone, a plain
    # XPUB drops the subscription as a duplicate and the test would wait for it in vain.
    verbose = lambda s: s.setsockopt(zmq.XPUB_VERBOSE, 1)  # noqa: E731
    with running_service(policy="every", queue=4, sensor_setup=verbose) as (service, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(huge, 1, "cam"))
        del huge
        deadline = time.monotonic() + 10
        while True:  # the reconnected SUB's subscription (XPUB may first report the dropped one)
            assert sensor.poll(max(1, int((deadline - time.monotonic()) * 1e3))), "service did not reconnect"
            if sensor.recv()[:1] == b"\x01":
                break
        sensor.send_multipart(encode_frame(part(1), 2, "cam"))
        res = recv_result(client)
        status = wait_status(client)
    assert res["status"] == "ok" and res["seq"] == 2 and res["anomalous"] is False
    assert status["frames_out"] == 1 and status["errors"] == 0 and status["reconnects"] == 1


def test_scene_crop_removes_the_conveyor_before_detection(tmp_path):
    rng = np.random.default_rng(0)
    belt = np.c_[rng.uniform(-60, 60, 4000), rng.uniform(-50, 50, 4000), rng.normal(0, 0.1, 4000)]
    block = part(4)  # stands on the belt (z = 0 .. 10), towards a sensor 300 mm above
    frame = (np.r_[belt, block] - [0, 0, 300]).astype(np.float32)
    scene = calibrate_scene(frame, tol=0.5, min_height=1.0)
    (tmp_path / "scene.json").write_text(json.dumps(asdict(scene)))
    with running_service(policy="every", queue=4, scene=str(tmp_path / "scene.json")) as (_, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(frame, 0, "cam"))
        res = recv_result(client)
    kept = crop(frame, scene)
    assert res["status"] == "ok" and res["n_points"] == len(kept) and len(block) * 0.9 < len(kept) <= len(block)
    assert res["anomalous"] is False and "crop" in res["latency_ms"]
    with pytest.raises(NotInspected):  # uncropped, the belt outweighs the part: not a frame of the part
        detector().detect(frame)


@pytest.mark.parametrize("policy", ["latest", "every"])
def test_flow_control_drops_and_counts_under_a_burst(policy):
    n = 12
    with running_service(policy=policy, queue=3) as (service, sensor, client):
        wait_status(client)
        for seq in range(n):  # far faster than the detector (tens of ms per frame)
            sensor.send_multipart(encode_frame(part(seq), seq, "cam"))
        results, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:  # until a status accounts for every frame (it follows their results)
            topic, msg = recv(client)
            if topic != protocol.STATUS_TOPIC:
                results.append(msg)
            elif msg["frames_in"] == n and msg["frames_out"] + msg["dropped"] == n:
                status = msg
                break
    seqs = [r["seq"] for r in results]
    assert status["frames_in"] == n and status["dropped"] > 0 and status["seq_gaps"] == 0  # drops are no gaps
    assert status["frames_out"] == len(results) == n - status["dropped"]
    assert seqs == sorted(seqs) and all(r["status"] == "ok" for r in results)
    assert results[-1]["dropped_frames"] == status["dropped"]
    if policy == "latest":
        assert seqs[-1] == n - 1  # the newest frame is always served
    else:
        assert seqs[:3] == [0, 1, 2]  # the queued frames are kept, later ones refused
    assert status["policy"] == policy and status["latency_ms"]["p50"] > 0 and status["uptime_s"] > 0


def test_status_counts_sequence_gaps_and_restarts_apart_from_drops():
    with running_service(policy="every", queue=8) as (service, sensor, client):
        wait_status(client)
        for seq in (0, 1, 5):
            sensor.send_multipart(encode_frame(part(seq), seq, "cam"))
        [recv_result(client) for _ in range(3)]
        status = wait_status(client)
    assert status["seq_gaps"] == 3 and status["seq_restarts"] == 0 and status["dropped"] == 0
    assert status["fps"] > 0 and status["latency_ms"]["p99"] >= status["latency_ms"]["p50"]
    assert status["healthy"] is True and "lost" not in status


def test_hostile_sequence_numbers_are_restarts_and_the_service_keeps_publishing():
    """seq 0, 2^64-1, 0, 2, 4 from one sensor once overflowed the status counters and killed the publisher."""
    with running_service(policy="every", queue=8) as (service, sensor, client):
        wait_status(client)
        for seq in (0, 2**64 - 1, 0, 2, 4):
            sensor.send_multipart(encode_frame(part(seq % 7), seq, "cam"))
        results = [recv_result(client) for _ in range(5)]
        status = wait_status(client)
        sensor.send_multipart(encode_frame(part(1), 6, "cam"))
        after = recv_result(client)
        later = wait_status(client)
    assert [r["seq"] for r in results] == [0, 2**64 - 1, 0, 2, 4] and all(r["status"] == "ok" for r in results)
    assert status["seq_restarts"] == 2 and status["seq_gaps"] == 2
    assert after["status"] == "ok" and later["frames_out"] == 6 and later["healthy"] is True


def test_a_thread_that_dies_stops_the_service_and_names_itself(monkeypatch):
    """The publisher's status packing raising (the original OverflowError) must end the service with the reason,
    not leave it running without a publisher."""
    calls = []

    def failing_status(**fields):
        calls.append(1)
        if len(calls) == 3:
            raise OverflowError("int too big to convert")
        return real_status(**fields)

    real_status = protocol.status
    monkeypatch.setattr(protocol, "status", failing_status)
    service = Service(detector(), ServiceConfig(engine="-", sub="tcp://127.0.0.1:1", pub="tcp://127.0.0.1:*",
                                                status_interval=0.05, linger_ms=0))
    stop = threading.Event()
    with pytest.raises(ServiceFailure, match="publisher thread died: OverflowError"):
        service.run(stop)
    assert stop.is_set() and not service.healthy()


def test_a_wrong_key_sensor_does_not_cause_a_reconnect_storm(tmp_path):
    zmq.auth.create_certificates(tmp_path, "server")
    with running_service(curve_secret=str(tmp_path / "server.key_secret")) as (service, sensor, client):
        time.sleep(3.0)  # the plain sensor fails every CURVE handshake
        reconnects = service.stats.reconnects
    assert 1 <= reconnects <= 8  # backing off 0.1, 0.2, 0.4 ... 5 s; no backoff would be ~30 in 3 s


def test_float32_overflow_rows_are_dropped_like_nan_rows_and_odd_headers_are_refused():
    good = part(2).astype(np.float64)
    good[7] = [1e300, 0.0, 0.0]  # finite in float64, inf in float32
    good[9] = [np.nan, 1.0, 2.0]
    header = msgpack.unpackb(encode_frame(part(0), 1, "cam")[1])
    nested = 1
    for _ in range(1000):
        nested = [nested]
    odd = [{**header, "seq": 2, "schema": True}, {**header, "seq": 3, "schema": 1.0}, {**header, "seq": 4,
                                                                                        "schema": nested}]
    with running_service(policy="every", queue=8) as (service, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(good, 1, "cam"))
        ok = recv_result(client)
        for h in odd:
            packed = msgpack.packb(h)
            sensor.send_multipart([b"edgead/frame/cam", packed[:4096], bytes(encode_frame(part(0), 1, "cam")[2])])
        errors = [recv_result(client) for _ in odd]
    assert ok["status"] == "ok" and ok["n_invalid"] == 2 and ok["n_points"] == len(good)
    assert all(e["status"] == "error" and "schema" in e["error"] and "internal" not in e["error"] for e in errors)


def test_good_parts_carry_no_regions():
    with running_service(policy="every", queue=4) as (service, sensor, client):
        wait_status(client)
        sensor.send_multipart(encode_frame(part(5), 1, "cam"))
        res = recv_result(client)
    assert res["status"] == "ok" and res["anomalous"] is False and res["regions"] == []


def test_curve_admits_only_authorized_clients(tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "authorized"
    keys.mkdir()
    allowed.mkdir()
    for name in ("server", "sensor", "client", "intruder"):
        zmq.auth.create_certificates(keys, name)
    for name in ("sensor", "client"):
        (keys / f"{name}.key").rename(allowed / f"{name}.key")

    def client_of(name):
        def setup(sock):
            sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(keys / f"{name}.key_secret")
            sock.curve_serverkey = zmq.auth.load_certificate(keys / "server.key")[0]
        return setup

    ctx = zmq.Context()
    with running_service(ctx=ctx, sensor_setup=client_of("sensor"), client_setup=client_of("client"),
                         curve_secret=str(keys / "server.key_secret"), curve_authorized=str(allowed)) as (
            service, sensor, client):
        intruders = []
        for setup in (client_of("intruder"), None):  # a wrong key pair, and no CURVE at all
            sock = ctx.socket(zmq.SUB)
            sock.linger = 0
            if setup:
                setup(sock)
            sock.subscribe(b"")
            sock.connect(service.pub_endpoint)
            intruders.append(sock)
        wait_status(client)
        sensor.send_multipart(encode_frame(part(1), 1, "cam"))
        assert recv_result(client)["status"] == "ok"
        assert all(not s.poll(1000) for s in intruders)  # not even a status message
        for s in intruders:
            s.close()
    ctx.term()


def test_cli_serve_finishes_the_frame_in_flight_on_sigterm(tmp_path):
    ctx = zmq.Context.instance()
    sensor = ctx.socket(zmq.XPUB)
    sensor.linger = 0
    sensor.bind("tcp://127.0.0.1:*")
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"policy": "every", "queue": 4, "threshold": 2.0, "status_interval": 0.2}))
    proc = subprocess.Popen([sys.executable, "-m", "edgead", "serve", "--engine", str(template_run()), "--config",
                             str(config), "--sub", sensor.last_endpoint.decode(), "--pub", "tcp://127.0.0.1:*"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    client = ctx.socket(zmq.SUB)
    client.linger = 0
    try:
        line = proc.stderr.readline()
        endpoint = re.search(r"results on (tcp://\S+)", line)
        assert endpoint, line
        client.subscribe(b"")
        client.connect(endpoint.group(1))
        assert sensor.poll(10_000)
        sensor.recv()
        wait_status(client, 10_000)
        sensor.send_multipart(encode_frame(part(2, defect=True, n=40_000), 42, "cam"))
        res = None  # wait until the service has the frame (in flight: it takes a few hundred ms); on a fast
        while True:  # machine its result may already be out, so keep results seen while waiting
            topic, msg = recv(client)
            if topic != protocol.STATUS_TOPIC:
                res = msg
            elif msg["frames_in"] > 0:
                break
        proc.send_signal(signal.SIGTERM)
        res = res or recv_result(client)
        assert res["seq"] == 42 and res["status"] == "ok" and res["anomalous"] is True
        assert proc.wait(10) == 0
        assert "stopped; 1 frames in, 1 results out" in proc.stderr.read()
    finally:
        proc.kill()
        sensor.close()
        client.close()


def test_cli_serve_refuses_a_missing_engine_and_bad_endpoints(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgead", "serve", "--engine", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no such engine" in out.stderr
    out = subprocess.run([sys.executable, "-m", "edgead", "serve", "--engine", str(template_run()), "--pub",
                          "nonsense://x"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "cannot use endpoints" in out.stderr
