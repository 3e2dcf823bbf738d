"""The whole streaming job on one machine, with nothing to install, train or plug in (``edgead demo``).

A replay sensor publishes synthetic parts (``edgead.tools.synth``: good ones and ones with surface defects) over ZeroMQ,
``edgead serve``'s :class:`~edgead.stream.service.Service` runs the demo engine shipped in ``engines/demo`` with the
threshold in ``calibration/demo_threshold.json``, and a subscriber prints each result as it arrives. All three talk
over real loopback sockets, exactly as separate processes on a line would. ``engines/make_demo.py`` rebuilds the
engine and its calibration.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from edgead.formats.rundir import is_run_dir
from edgead.formats.threshold import write_threshold
from edgead.runtime import EdgeDetector
from edgead.stream import protocol
from edgead.stream.sensors import FramePublisher, publish
from edgead.stream.service import Service, ServiceConfig
from edgead.tools import synth
from edgead.tools.calibrate import calibrate_threshold
from edgead.train import train

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engines" / "demo"
THRESHOLD = ROOT / "calibration" / "demo_threshold.json"
CATEGORY, N_POINTS = "hex_bolt", 16000  # the demo part and its scan density
TRAIN_SCANS, CALIBRATION_SEED, DEMO_SEED = 4, 1, 2


def demo_scan(kind: str, seed: int, index: int) -> synth.Scan:
    """One synthetic test scan of the demo part (``kind`` "good" or a defect type)."""
    return synth.make_scan(CATEGORY, kind, seed=seed, index=index, split="test", n_points=N_POINTS)


def demo_kinds(n: int) -> list[str]:
    """Two good parts, then a defective one of each type in turn: 1 in 3 is defective."""
    return ["good" if i % 3 != 2 else synth.DEFECT_TYPES[(i // 3) % len(synth.DEFECT_TYPES)] for i in range(n)]


def train_scans() -> list:
    return [synth.make_scan(CATEGORY, "good", seed=0, index=i, split="train", n_points=N_POINTS).points
            for i in range(TRAIN_SCANS)]


def demo_frames(n: int, seed: int):
    """(points, capture time, frame id naming the truth) for the replay sensor."""
    for i, kind in enumerate(demo_kinds(n)):
        yield demo_scan(kind, seed, i).points, time.time(), f"part{i:04d}-{kind}"


def build_demo_engine(engine: Path, threshold_file: Path, n_calibration: int = 30) -> dict:
    """Fit the template demo engine on synthetic good parts and its F1-optimal threshold on held-out synthetic scans
    (good and defective, a seed the demo does not replay). Returns the threshold calibration document."""
    shutil.rmtree(engine, ignore_errors=True)
    train("template", train_scans(), engine)
    scans = [(kind, demo_scan(kind, CALIBRATION_SEED, i).points) for i, kind in enumerate(demo_kinds(n_calibration))]
    doc = calibrate_threshold(EdgeDetector.load(engine), [p for k, p in scans if k == "good"],
                              [p for k, p in scans if k != "good"])
    doc["engine"] = engine.name
    write_threshold(threshold_file, doc)
    return doc


def load_engine(engine: Path | None, threshold) -> EdgeDetector:
    """The demo engine and threshold, or the given ones (an install without the repository's engines/ builds the
    demo engine in a temporary folder first)."""
    if engine is None:
        if not is_run_dir(ENGINE):
            tmp = Path(tempfile.mkdtemp(prefix="edgead-demo-"))
            print(f"edgead demo: {ENGINE} not found; building the demo engine in {tmp} (seconds)", file=sys.stderr)
            build_demo_engine(tmp / "demo", tmp / "demo_threshold.json")
            engine, default_threshold = tmp / "demo", tmp / "demo_threshold.json"
        else:
            engine, default_threshold = ENGINE, THRESHOLD
        threshold = default_threshold if threshold is None else threshold
    return EdgeDetector.load(engine, threshold=threshold)


def run_demo(frames: int, rate: float, engine: Path | None = None, threshold=None, seed: int = DEMO_SEED,
             policy: str = "every") -> int:
    """Replay ``frames`` synthetic parts at ``rate`` per second through a service and print each result."""
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    det = load_engine(engine, threshold)
    ctx = zmq.Context()
    sensor = FramePublisher("tcp://127.0.0.1:*", "demo", ctx)
    service = Service(det, ServiceConfig(engine=str(det.name), sub=sensor.endpoint, pub="tcp://127.0.0.1:*",
                                         policy=policy, queue=max(8, frames)), ctx)
    stop = threading.Event()
    serving = threading.Thread(target=service.run, args=(stop,), name="edgead-service", daemon=True)
    serving.start()
    client = ctx.socket(zmq.SUB)
    client.linger = 0
    client.subscribe(b"")
    service.ready.wait(10)
    client.connect(service.pub_endpoint)
    print(f"edgead demo: {frames} synthetic {CATEGORY} parts at {rate:g}/s -> {det.name} "
          f"({det.backend}, threshold {det.threshold}) on {sensor.endpoint} -> results on {service.pub_endpoint}")
    results, status, t0 = [], None, time.monotonic()
    try:
        while status is None:  # both ends connected: the service's status reached us
            if time.monotonic() - t0 > 10:
                raise RuntimeError("the demo service did not come up")
            if client.poll(200):
                topic, msg = protocol.decode_message(client.recv_multipart())
                status = msg if topic == protocol.STATUS_TOPIC else None
        sensor.wait_subscriber(10)
        sending = threading.Thread(target=publish, args=(sensor, demo_frames(frames, seed), rate,
                                                         stop), name="edgead-sensor", daemon=True)
        sending.start()
        deadline = time.monotonic() + 30 + frames * (1 / max(rate, 0.1) + 2)
        while time.monotonic() < deadline:
            sent_all = not sending.is_alive()
            if sent_all and len(results) + service.buffer.dropped >= sensor.seq:
                break
            if not client.poll(200):
                continue
            topic, msg = protocol.decode_message(client.recv_multipart())
            if topic == protocol.STATUS_TOPIC:
                status = msg
            else:
                results.append(msg)
                print(protocol.describe(msg), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        serving.join(10)
        sensor.close()
        client.close()
        ctx.term()
    print(summary(results, service.status()))
    return 0 if results else 1


def summary(results: list[dict], status: dict) -> str:
    ok = [r for r in results if r["status"] == "ok"]
    truth = [not (r["frame_id"] or "").endswith("-good") for r in ok]
    flagged = [bool(r["anomalous"]) for r in ok]
    hits = sum(t and f for t, f in zip(truth, flagged, strict=True))
    false_alarms = sum(f and not t for t, f in zip(truth, flagged, strict=True))
    lat = status["latency_ms"]
    return (f"edgead demo: {len(results)} results ({len(results) - len(ok)} errors), {status['dropped']} dropped; "
            f"defective parts flagged {hits}/{sum(truth)}, false alarms {false_alarms}/{len(ok) - sum(truth)}; "
            f"latency p50 {lat['p50'] or 0:.0f} ms, p95 {lat['p95'] or 0:.0f} ms")
