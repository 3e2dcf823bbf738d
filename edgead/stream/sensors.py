"""``edgead sensor realsense|replay``: publish sensor frames (points in mm) in the edgead wire protocol.

The sensor binds an XPUB socket (a PUB that also sees subscriptions, so a replay can wait for the service instead of
sending into the void) and sends one frame per cloud with consecutive sequence numbers.

RealSense depth frames become points through the SDK's own deprojection (``rs.pointcloud`` with the stream's
intrinsics and depth scale), after its decimation and threshold (distance range) filters; invalid pixels (depth 0)
are dropped and the scene calibration's crop keeps the part.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import zmq

from edgead.formats.pointcloud import SUFFIXES, PointCloudError, read_points
from edgead.formats.scene import Scene, crop
from edgead.stream import protocol
from edgead.stream.security import make_client

RECORDING_SUFFIXES = (".bag", ".db3")  # RealSense recordings: ROS1 bags, rosbag2 (what recent SDKs write)


class FramePublisher:
    """One sensor's frame stream on a bound XPUB socket."""

    def __init__(self, endpoint: str, sensor_id: str, ctx: zmq.Context | None = None,
                 curve_secret: str | None = None, curve_server_key: str | None = None):
        self.sensor_id, self.seq = sensor_id, 0
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.XPUB)
        self.sock.linger = 1000
        self.sock.sndhwm = 16
        if curve_secret:
            if not curve_server_key:
                raise ValueError("CURVE needs the service's public key too (--curve-server-key)")
            make_client(self.sock, curve_secret, curve_server_key)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            raise ValueError(f"cannot bind {endpoint}: {exc}") from None
        self.endpoint = self.sock.last_endpoint.decode()

    def wait_subscriber(self, timeout: float) -> bool:
        """Block until a subscriber (the service) has subscribed, or ``timeout`` seconds pass."""
        if self.sock.poll(int(timeout * 1000)):
            self.sock.recv()
            return True
        return False

    def send(self, points: np.ndarray, t_capture: float | None = None, frame_id: str = "") -> None:
        self.sock.send_multipart(protocol.encode_frame(points, self.seq, self.sensor_id, t_capture=t_capture,
                                                       frame_id=frame_id))
        self.seq += 1

    def close(self) -> None:
        self.sock.close()


def publish(pub: FramePublisher, frames: Iterable, rate: float, stop: threading.Event, limit: int = 0) -> int:
    """Send (points, t_capture[, frame_id]) frames at ``rate`` Hz (0: as fast as they come) until exhausted,
    ``limit`` frames (0: no limit) or ``stop``. Returns the number sent."""
    period, next_t, n = (1.0 / rate if rate > 0 else 0.0), time.monotonic(), 0
    for frame in frames:
        if stop.is_set():
            break
        if period:
            stop.wait(max(0.0, next_t - time.monotonic()))
            next_t = max(next_t + period, time.monotonic() - period)  # no catch-up burst after a stall
        pub.send(*frame)
        n += 1
        if limit and n >= limit:
            break
    return n


# -- RealSense ---------------------------------------------------------------------------------------------------
class DepthToPoints:
    """Depth frame -> (N, 3) float32 points in mm: decimation and threshold filters, SDK deprojection, crop."""

    def __init__(self, decimation: int = 2, min_mm: float = 100.0, max_mm: float = 2000.0,
                 scene: Scene | None = None):
        import pyrealsense2 as rs

        self.filters = []
        if decimation > 1:
            dec = rs.decimation_filter()
            dec.set_option(rs.option.filter_magnitude, decimation)
            self.filters.append(dec)
        self.filters.append(rs.threshold_filter(min_mm / 1000.0, max_mm / 1000.0))
        self.pc, self.scene = rs.pointcloud(), scene

    def __call__(self, depth) -> np.ndarray:
        for f in self.filters:
            depth = f.process(depth)
        verts = np.asanyarray(self.pc.calculate(depth).get_vertices()).view(np.float32).reshape(-1, 3)
        pts = verts[verts[:, 2] > 0] * np.float32(1000.0)  # metres -> mm; depth 0 = no measurement
        if self.scene is not None:
            pts = crop(pts, self.scene)
        return np.ascontiguousarray(pts, dtype=np.float32)


def capture_time(frame) -> float:
    """Seconds since the epoch: the frame's own timestamp where it is wall-clock based, else the time now."""
    import pyrealsense2 as rs

    domain = frame.get_frame_timestamp_domain()
    if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
        return frame.get_timestamp() / 1000.0
    return time.time()


def realsense_frames(source, to_points: DepthToPoints, timeout_ms: int = 5000) -> Iterator[tuple[np.ndarray, float]]:
    """Frames from anything with ``wait_for_frames`` (an ``rs.pipeline``, or an ``rs.syncer`` fed by a device).

    Ends when the source has nothing within ``timeout_ms`` (the end of a recording, a camera gone)."""
    while True:
        try:
            frames = source.wait_for_frames(timeout_ms)
        except RuntimeError:
            return
        depth = frames.get_depth_frame()
        if depth:
            yield to_points(depth), capture_time(depth)


def open_camera(serial: str | None = None, bag: Path | None = None, width: int = 848, height: int = 480,
                fps: int = 30):
    """Start an ``rs.pipeline`` on a camera (by serial) or a recording (not real-time: every frame is read)."""
    import pyrealsense2 as rs

    pipe, cfg = rs.pipeline(), rs.config()
    if bag is not None:
        cfg.enable_device_from_file(str(bag), repeat_playback=False)
    else:
        if serial:
            cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
    profile = pipe.start(cfg)
    if bag is not None:
        profile.get_device().as_playback().set_real_time(False)
    return pipe


def bag_frames(path: Path, to_points: DepthToPoints) -> Iterator[tuple[np.ndarray, float]]:
    pipe = open_camera(bag=path)
    try:
        yield from realsense_frames(pipe, to_points, timeout_ms=2000)
    finally:
        pipe.stop()


# -- replay ------------------------------------------------------------------------------------------------------
def file_frames(files: list[Path], loop: bool = False, to_points: DepthToPoints | None = None
                ) -> Iterator[tuple[np.ndarray, float]]:
    """Clouds from point-cloud files and RealSense recordings, in order, forever with ``loop``.

    Every file is checked here, before the first frame is asked for: a missing file or an unknown type is reported
    at once, not after the sensor has waited for a subscriber. A file that cannot be read (corrupt, truncated) is
    skipped with a warning naming it, as a camera drops a bad frame: one broken scan in a folder must not end a
    replay of the rest.
    """
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such file")
        if f.suffix.lower() not in SUFFIXES + RECORDING_SUFFIXES:
            raise ValueError(f"{f}: cannot replay this file type; expected one of "
                             f"{', '.join(SUFFIXES + RECORDING_SUFFIXES)}")
    return _replay(files, loop, to_points)


def _replay(files: list[Path], loop: bool, to_points: DepthToPoints | None) -> Iterator[tuple[np.ndarray, float]]:
    while True:
        for f in files:
            if f.suffix.lower() in RECORDING_SUFFIXES:
                yield from bag_frames(f, to_points or DepthToPoints())
            else:
                try:
                    points = read_points(f)
                except PointCloudError as exc:
                    print(f"edgead sensor: skipping {exc}", file=sys.stderr, flush=True)
                    continue
                yield points, time.time()
        if not loop:
            return
