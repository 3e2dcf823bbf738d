"""The RealSense path through the SDK's software device (real librealsense filters and deprojection, no camera)."""

import gc
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq
from stream_helpers import part

from edgead.formats.pointcloud import write_pcd
from edgead.stream.protocol import decode_frame
from edgead.stream.sensors import DepthToPoints, FramePublisher, file_frames, publish, realsense_frames
from edgead.tools.calibrate import calibrate_scene, crop

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 (the realsense extra) is not installed")

W, H, F = 64, 48, 50.0  # pixels, focal length in pixels
PLANE_MM, BOX_MM = 500, 450  # conveyor at 500 mm from the camera, a 50 mm tall box on it


def depth_image(i: int = 0) -> np.ndarray:
    depth = np.full((H, W), PLANE_MM, np.uint16)
    depth[16:32, 8:24] = BOX_MM  # the box top: columns 8..23, rows 16..31
    depth[:4, -4:] = 3000  # far background: removed by the threshold filter
    depth[-4:, :4] = 0  # no measurement
    return depth + np.uint16(i)


class SoftwareCamera:
    """A software depth sensor with intrinsics; ``wait_for_frames`` feeds the next image like a camera would."""

    def __init__(self, images, recorder_path=None):
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, F, F, W / 2, H / 2
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        self.device = rs.software_device()
        self.sensor = self.device.add_sensor("Depth")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.depth, 0, 0, W, H, 30, 2
        vs.fmt, vs.intrinsics = rs.format.z16, intr
        self.profile = self.sensor.add_video_stream(vs)
        self.sensor.add_read_only_option(rs.option.depth_units, 0.001)
        self.recorder = rs.recorder(str(recorder_path), self.device) if recorder_path else None
        self.active = self.recorder.query_sensors()[0] if self.recorder else self.sensor
        self.images, self.syncer, self.n = list(images), rs.syncer(), 0
        self.active.open(self.profile)
        self.active.start(self.syncer)

    def wait_for_frames(self, timeout_ms: int = 5000):
        if self.n >= len(self.images):
            raise RuntimeError("no more frames")  # what rs.pipeline raises on a timeout
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = self.images[self.n], 2, 2 * W
        f.timestamp, f.domain, f.frame_number = 1000.0 * (1.7e9 + self.n), rs.timestamp_domain.system_time, self.n
        f.profile, f.depth_units = self.profile.as_video_stream_profile(), 0.001
        self.n += 1
        self.sensor.on_video_frame(f)
        return self.syncer.wait_for_frames(timeout_ms)

    def close(self):
        self.active.stop()
        self.active.close()
        self.active = self.recorder = None


def check_geometry(pts: np.ndarray, decimation: int) -> None:
    """Plane and box top at their depths in mm, deprojected with the (decimated) intrinsics."""
    assert pts.dtype == np.float32 and np.isfinite(pts).all()
    z = pts[:, 2]
    assert set(np.unique(np.round(z))) == {BOX_MM, PLANE_MM}  # far and invalid pixels are gone
    box = pts[np.round(z) == BOX_MM]
    n_box = (16 // decimation) * (16 // decimation)
    assert len(box) == n_box and len(pts) < (W // decimation) * (H // decimation)
    # x = (u - ppx) / fx * z: back to full-resolution pixel columns 8..23 in steps of the decimation
    u = box[:, 0] / BOX_MM * F + W / 2
    v = box[:, 1] / BOX_MM * F + H / 2
    np.testing.assert_allclose(np.unique(np.round(u, 3)), np.arange(8, 24, decimation), atol=1e-3)
    np.testing.assert_allclose(np.unique(np.round(v, 3)), np.arange(16, 32, decimation), atol=1e-3)


@pytest.mark.parametrize("decimation", [1, 2])
def test_software_depth_camera_to_published_points_in_mm(decimation):
    cam = SoftwareCamera([depth_image(0), depth_image(0)])
    ctx = zmq.Context.instance()
    pub = FramePublisher("tcp://127.0.0.1:*", "rs0", ctx)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"edgead/frame/")
    sub.connect(pub.endpoint)
    try:
        assert pub.wait_subscriber(5)
        frames = realsense_frames(cam, DepthToPoints(decimation=decimation, min_mm=100, max_mm=2000), 2000)
        assert publish(pub, frames, rate=0, stop=threading.Event()) == 2
        got = []
        for _ in range(2):
            assert sub.poll(5000)
            got.append(decode_frame(sub.recv_multipart(), 10**6))
    finally:
        cam.close()
        pub.close()
        sub.close()
    (h0, p0), (h1, p1) = got
    assert (h0["seq"], h1["seq"], h0["sensor"]) == (0, 1, "rs0") and h0["t_capture"] == pytest.approx(1.7e9)
    check_geometry(p0, decimation)
    np.testing.assert_array_equal(p0, p1)  # same depth, same points


def test_scene_calibration_crops_the_box_out_of_the_depth_points():
    cam = SoftwareCamera([depth_image(0)])
    try:
        pts = next(realsense_frames(cam, DepthToPoints(decimation=1), 2000))[0]
    finally:
        cam.close()
    scene = calibrate_scene(pts, tol=2.0, max_height=100.0)
    np.testing.assert_allclose(np.abs(scene.axes[2]), [0, 0, 1], atol=1e-5)  # the conveyor faces the camera
    assert scene.axes[2][2] < 0  # parts stand towards the camera (smaller z)
    cropped = crop(pts, scene)
    np.testing.assert_array_equal(np.unique(np.round(cropped[:, 2])), [BOX_MM])
    assert len(cropped) == 16 * 16
    cam = SoftwareCamera([depth_image(0)])
    try:  # the sensor applies the same crop itself
        direct = next(realsense_frames(cam, DepthToPoints(decimation=1, scene=scene), 2000))[0]
    finally:
        cam.close()
    np.testing.assert_array_equal(direct, cropped)


def test_replay_of_a_realsense_recording(tmp_path):
    rec = tmp_path / "line.db3"
    cam = SoftwareCamera([depth_image(i) for i in range(3)], recorder_path=rec)
    live = [p for p, _ in realsense_frames(cam, DepthToPoints(decimation=2), 2000)]
    cam.close()
    del cam
    gc.collect()  # the recorder finishes its file when the device is destroyed: make that happen now
    replayed = [p for p, _ in file_frames([rec], to_points=DepthToPoints(decimation=2))]
    assert len(replayed) == 3
    for a, b in zip(live, replayed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cli_replay_publishes_files_in_order(tmp_path):
    a, b = part(1), part(2, defect=True)
    np.save(tmp_path / "a.npy", a)
    write_pcd(tmp_path / "b.pcd", b)
    ctx = zmq.Context.instance()
    proc = subprocess.Popen([sys.executable, "-m", "edgead", "sensor", "replay", str(tmp_path / "a.npy"),
                             str(tmp_path / "b.pcd"), "--pub", "tcp://127.0.0.1:*", "--rate", "20", "--loop",
                             "--frames", "3", "--sensor-id", "line1"], stderr=subprocess.PIPE, text=True)
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    try:
        endpoint = re.search(r"on (tcp://\S+)", proc.stderr.readline())
        assert endpoint
        sub.subscribe(b"edgead/frame/line1")
        sub.connect(endpoint.group(1))
        got = []
        for _ in range(3):
            assert sub.poll(10_000)
            got.append(decode_frame(sub.recv_multipart(), 10**6))
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        sub.close()
    assert [h["seq"] for h, _ in got] == [0, 1, 2]
    for (_, pts), ref in zip(got, (a, b, a), strict=True):
        np.testing.assert_allclose(pts, ref, atol=1e-3)


def test_replay_refuses_unknown_files(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot replay"):
        next(file_frames([tmp_path / "x.jpg"]))
    with pytest.raises(FileNotFoundError):
        next(file_frames([tmp_path / "missing.npy"]))


def test_replay_skips_an_unreadable_file_and_goes_on(tmp_path, capsys):
    a, b = part(1), part(2)
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "broken.pcd").write_bytes(b"VERSION .7\nFIELDS x y z\nDATA binary\n\x00\x01")
    np.save(tmp_path / "b.npy", b)
    got = [p for p, _ in file_frames([tmp_path / "a.npy", tmp_path / "broken.pcd", tmp_path / "b.npy"])]
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], b)
    assert "broken.pcd" in capsys.readouterr().err
