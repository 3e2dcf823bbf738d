"""``edgead serve --engine PATH [--sub ...] [--pub ...]``: the streaming service (``edgead.stream.service``)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from edgead.runtime import MAX_POINTS, EdgeDetector
from edgead.stream.service import POLICIES, Service, ServiceConfig, ServiceFailure


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", help="run directory, .onnx or .plan engine")
    p.add_argument("--sub", help="sensor endpoint to connect to (default tcp://127.0.0.1:5555)")
    p.add_argument("--pub", help="endpoint to bind for results and status (default tcp://127.0.0.1:5556; "
                   "tcp://*:5556 for every interface)")
    p.add_argument("--config", type=Path, help="JSON file with any of these options (command line wins)")
    p.add_argument("--threshold", help="decision threshold: a number or a calibration file")
    p.add_argument("--scene", help="scene calibration file: crop the raw cloud to the part")
    p.add_argument("--policy", choices=POLICIES, help="latest (drop stale frames, default) or every (bounded queue)")
    p.add_argument("--queue", type=int, help="queue length of the every policy (default 8)")
    p.add_argument("--point-scores", action="store_true", default=None, help="add per-point scores to results")
    p.add_argument("--region-radius", type=float, help="mm linking anomalous points into regions (default: auto)")
    p.add_argument("--max-points", type=int, help=f"reject larger frames (default {MAX_POINTS})")
    p.add_argument("--status-interval", type=float, help="seconds between status messages (default 1)")
    p.add_argument("--device", help="cpu or cuda (run directories and ONNX)")
    p.add_argument("--curve-secret", help="the service's CURVE secret key file (enables encryption)")
    p.add_argument("--curve-authorized", help="directory of client public keys allowed to connect")
    p.add_argument("--metrics", help="HOST:PORT to serve Prometheus /metrics and /healthz on (e.g. 127.0.0.1:9100)")


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    values: dict = {}
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{args.config}: cannot read service config ({exc})") from exc
        unknown = set(values) - {f.name for f in fields(ServiceConfig)}
        if unknown:
            raise ValueError(f"{args.config}: unknown options {', '.join(sorted(unknown))}")
    values.update({f.name: getattr(args, f.name) for f in fields(ServiceConfig)
                   if getattr(args, f.name, None) is not None})
    cfg = ServiceConfig(**values)
    if not cfg.engine:
        raise ValueError("an engine is needed: --engine PATH (or 'engine' in --config)")
    return cfg


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    det = EdgeDetector.load(cfg.engine, threshold=cfg.threshold, device=cfg.device)
    service = Service(det, cfg)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ready = threading.Thread(target=lambda: service.ready.wait() and print(
        f"edgead serve: {det.name} ({det.backend}, threshold {det.threshold}) policy {cfg.policy}; frames from "
        f"{cfg.sub}; results on {service.pub_endpoint}"
        + (f"; metrics on http://{service.metrics.address}/metrics" if service.metrics else ""),
        file=sys.stderr, flush=True), daemon=True)
    ready.start()
    try:
        service.run(stop)
    except ServiceFailure as exc:
        print(f"edgead serve: stopped on a failure: {exc}", file=sys.stderr)
        return 1
    s = service.status()
    print(f"edgead serve: stopped; {s['frames_in']} frames in, {s['frames_out']} results out, {s['dropped']} "
          f"dropped, {s['errors']} errors", file=sys.stderr)
    return 0
