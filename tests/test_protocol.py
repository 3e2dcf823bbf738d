import msgpack
import numpy as np
import pytest
from stream_helpers import part

from edgead.stream import protocol
from edgead.stream.protocol import FrameError, decode_frame, encode_frame
from edgead.stream.regions import anomalous_regions, point_spacing


def test_frame_round_trip_is_zero_copy():
    pts = part(0)
    parts = encode_frame(pts, 5, "cam1", t_capture=12.5)
    header, got = decode_frame(parts, max_points=10_000)
    assert header["seq"] == 5 and header["sensor"] == "cam1" and header["t_capture"] == 12.5
    assert header["shape"] == [len(pts), 3] and header["dtype"] == "float32" and header["units"] == "mm"
    np.testing.assert_array_equal(got, pts)
    assert np.shares_memory(got, pts)  # the buffer part is the array's memory, read back without a copy


def test_float64_frames_decode():
    pts = part(0).astype(np.float64)
    np.testing.assert_array_equal(decode_frame(encode_frame(pts, 0, "c"), 10_000)[1], pts)


def _header(**over):
    h = {"schema": 1, "seq": 3, "t_capture": 1.0, "sensor": "cam", "dtype": "float32", "shape": [2, 3],
         "units": "mm", "frame_id": "cam-3"}
    h.update(over)
    return h


@pytest.mark.parametrize("parts,reason,known_seq", [
    ([b"edgead/frame/cam", b"x"], "3 parts", None),
    ([b"edgead/frame/cam", b"\xc1", b""], "not valid msgpack", None),
    ([b"edgead/frame/cam", msgpack.packb([1, 2]), b""], "must be a msgpack map", None),
    ([b"edgead/frame/cam", msgpack.packb(_header(schema=2)), bytes(24)], "unsupported frame schema", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header(dtype="int16")), bytes(24)], "dtype must be", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header(shape=[2, 4])), bytes(32)], "shape must be", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header()), bytes(20)], "point buffer is 20 bytes", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header(shape=[10**6, 3])), bytes(24)], "more than the limit", 3),
    ([b"edgead/frame/other", msgpack.packb(_header()), bytes(24)], "does not match sensor", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header(units="m")), bytes(24)], "units must be", 3),
    ([b"edgead/frame/cam", msgpack.packb({k: v for k, v in _header().items() if k != "dtype"}), b""], "lacks", 3),
    ([b"edgead/frame/cam", msgpack.packb(_header(seq=-1)), bytes(24)], "non-negative", None),
    ([b"edgead/frame/cam", msgpack.packb(_header()) + bytes(5000), bytes(24)], "header is", None),
])
def test_malformed_frames_name_the_problem_and_keep_the_frame_identity(parts, reason, known_seq):
    with pytest.raises(FrameError, match=reason) as info:
        decode_frame(parts, max_points=1000)
    assert info.value.header.get("seq") == known_seq
    assert info.value.header.get("sensor") == "cam"  # from the header, or else from the topic


def test_unpack_limits_refuse_oversized_and_ext_types():
    with pytest.raises(ValueError):
        protocol.unpack(msgpack.packb(b"x" * 100), max_bin_len=10)
    with pytest.raises(ValueError):
        protocol.unpack(msgpack.packb(msgpack.ExtType(1, b"abc")))


def test_regions_cluster_hot_points_in_sensor_units():
    grid = np.stack(np.meshgrid(np.arange(100.0), np.arange(100.0)), -1).reshape(-1, 2)  # a 1 mm grid
    pts = np.c_[grid, np.zeros(len(grid))].astype(np.float32)
    scores = np.zeros(len(pts), np.float32)
    blob_a = np.linalg.norm(pts[:, :2] - [20, 20], axis=1) < 5
    blob_b = np.linalg.norm(pts[:, :2] - [70, 60], axis=1) < 8
    scores[blob_a], scores[blob_b] = 2.0, 3.0
    scores[0] = np.nan
    regions = anomalous_regions(pts, scores, threshold=1.0)
    assert len(regions) == 2
    big, small = regions  # largest first
    assert big["n_points"] == blob_b.sum() and small["n_points"] == blob_a.sum()
    np.testing.assert_allclose(big["centroid"][:2], [70, 60], atol=1.0)
    np.testing.assert_allclose(small["centroid"][:2], [20, 20], atol=1.0)
    assert big["max_score"] == 3.0 and big["extent"][0] == 14.0 and big["extent"][2] == 0.0
    assert anomalous_regions(pts, scores, threshold=None) == []
    assert anomalous_regions(pts, scores, threshold=5.0) == []


def test_regions_of_duplicated_points_and_of_points_closer_than_the_radius():
    rng = np.random.default_rng(0)
    part = rng.uniform(0, 100, (16_000, 3)).astype(np.float32)
    stuck = np.tile(np.float32([[200.0, 200.0, 200.0]]), (8000, 1))  # a stuck pixel repeated 8000 times
    pts = np.r_[part, stuck]
    scores = np.r_[np.zeros(len(part)), np.ones(len(stuck))].astype(np.float32)
    regions = anomalous_regions(pts, scores, threshold=0.5)
    assert len(regions) == 1 and regions[0]["n_points"] == 8000 and regions[0]["extent"] == [0.0, 0.0, 0.0]
    # a chain of points 0.9 mm apart is one region at radius 1 mm, and two where one gap is 3 mm
    chain = np.c_[np.arange(20) * 0.9, np.zeros(20), np.zeros(20)].astype(np.float32)
    assert len(anomalous_regions(chain, np.ones(20, np.float32), 0.5, radius=1.0)) == 1
    chain[10:, 0] += 3.0
    ones = np.ones(20, np.float32)
    assert [r["n_points"] for r in anomalous_regions(chain, ones, 0.5, radius=1.0, min_points=1)] == [10, 10]
    # by default a region needs 16 points (the object score's neighbourhood); the largest always stays
    assert [r["n_points"] for r in anomalous_regions(chain, ones, 0.5, radius=1.0)] == [10]
    specks = np.r_[chain, np.float32([[50, 0, 0], [80, 0, 0]])]
    blob = np.c_[np.arange(30) * 0.5, np.full(30, 10.0), np.zeros(30)].astype(np.float32)
    pts = np.r_[blob, specks]
    assert [r["n_points"] for r in anomalous_regions(pts, np.ones(len(pts), np.float32), 0.5, radius=1.0)] == [30]


def test_point_spacing_matches_a_full_neighbour_search_on_a_surface():
    grid = np.stack(np.meshgrid(np.arange(300.0), np.arange(300.0)), -1).reshape(-1, 2) * 0.5  # 0.5 mm grid
    pts = np.c_[grid, np.zeros(len(grid))].astype(np.float32)
    assert abs(point_spacing(pts) - 0.5) < 0.1
    assert point_spacing(np.zeros((100, 3), np.float32)) == 0.0
