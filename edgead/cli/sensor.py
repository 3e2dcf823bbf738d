"""``edgead sensor realsense|replay``: publish sensor frames over ZeroMQ (``edgead.stream.sensors``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from edgead.formats.scene import read_scene
from edgead.stream.sensors import (
    RECORDING_SUFFIXES,
    DepthToPoints,
    FramePublisher,
    file_frames,
    open_camera,
    publish,
    realsense_frames,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="source", required=True)
    replay = sub.add_parser("replay", help="publish recorded scans (.pcd .ply .npy ...) or RealSense recordings")
    replay.add_argument("files", nargs="+", type=Path)
    replay.add_argument("--rate", type=float, default=10.0, help="frames per second (0: as fast as possible)")
    replay.add_argument("--loop", action="store_true", help="start again after the last file")
    cam = sub.add_parser("realsense", help="publish a RealSense depth camera's points")
    cam.add_argument("--serial", help="camera serial number (default: the first camera)")
    cam.add_argument("--width", type=int, default=848)
    cam.add_argument("--height", type=int, default=480)
    cam.add_argument("--fps", type=int, default=30)
    for q in (replay, cam):
        q.add_argument("--pub", default="tcp://127.0.0.1:5555",
                       help="endpoint to bind (default tcp://127.0.0.1:5555; tcp://*:5555 for every interface)")
        q.add_argument("--sensor-id", default=None, help="sensor id in topics and headers (default: the source)")
        q.add_argument("--frames", type=int, default=0, help="stop after this many frames (default: no limit)")
        q.add_argument("--wait", type=float, default=10.0,
                       help="seconds to wait for a subscriber before sending (0: do not wait)")
        q.add_argument("--scene", help="scene calibration: crop RealSense points to the part")
        q.add_argument("--decimation", type=int, default=2, help="RealSense decimation filter magnitude")
        q.add_argument("--min-mm", type=float, default=100.0, help="RealSense threshold filter: nearest depth")
        q.add_argument("--max-mm", type=float, default=2000.0, help="RealSense threshold filter: farthest depth")
        q.add_argument("--curve-secret", help="this sensor's CURVE secret key file")
        q.add_argument("--curve-server-key", help="the service's CURVE public key file")


def main(args: argparse.Namespace) -> int:
    scene = read_scene(args.scene) if args.scene else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.source == "replay":
        to_points = None
        if any(f.suffix.lower() in RECORDING_SUFFIXES for f in args.files):
            to_points = DepthToPoints(args.decimation, args.min_mm, args.max_mm, scene)
        frames, rate, pipe = file_frames(args.files, args.loop, to_points), args.rate, None
    else:
        pipe = open_camera(args.serial, width=args.width, height=args.height, fps=args.fps)
        frames, rate = realsense_frames(pipe, DepthToPoints(args.decimation, args.min_mm, args.max_mm, scene)), 0
    pub = FramePublisher(args.pub, args.sensor_id or args.source, curve_secret=args.curve_secret,
                         curve_server_key=args.curve_server_key)
    print(f"edgead sensor: publishing {pub.sensor_id} frames on {pub.endpoint}", file=sys.stderr, flush=True)
    try:
        if args.wait > 0 and not pub.wait_subscriber(args.wait):
            print(f"edgead sensor: no subscriber after {args.wait:g} s; sending anyway", file=sys.stderr)
        n = publish(pub, frames, rate, stop, args.frames)
    finally:
        if pipe is not None:
            pipe.stop()
        pub.close()
    print(f"edgead sensor: sent {n} frames", file=sys.stderr)
    return 0
