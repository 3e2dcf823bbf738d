"""Fuzzing the running service over real loopback sockets: garbage and valid frames interleaved."""

import itertools

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stream_helpers import part, recv_result, running_service, wait_status

from edgead.stream.protocol import STATUS_TOPIC, decode_message, encode_frame

INVALID_VALUES = {  # per header field, values that are never acceptable
    "schema": [0, 2, "1", None], "seq": [-1, "3", 1.5, None], "t_capture": ["now", None, [1]],
    "sensor": ["", 5, "x" * 200, "tab\t"], "dtype": ["int16", "float16", ">f4", 4], "shape": [[1, 4], [3], "N,3"],
    "units": ["m", "inch", None], "frame_id": ["", 7, None],
}


@pytest.fixture(scope="module")
def service():
    with running_service(policy="every", queue=10_000, max_points=5000) as handles:
        wait_status(handles[2])
        yield handles


frames = st.one_of(
    st.integers(0, 50).map(lambda s: ("ok", "frame", s)),
    st.lists(st.binary(max_size=64), min_size=0, max_size=4).filter(lambda p: len(p) != 2).map(
        lambda p: ("error", "parts", p)),  # with the topic: 1, 2, 4 or 5 parts
    st.tuples(st.binary(max_size=200), st.binary(max_size=64)).map(lambda hb: ("error", "raw", hb)),
    st.tuples(st.sampled_from(sorted(INVALID_VALUES)), st.integers(0, 3)).map(lambda kv: ("error", "field", kv)),
    st.sampled_from(sorted(INVALID_VALUES)).map(lambda k: ("error", "missing", k)),
    st.integers(-12, 12).filter(bool).map(lambda d: ("error", "buffer", d)),
    st.sampled_from(["nan", "empty", "oversized"]).map(lambda k: ("error", "cloud", k)),
)
example_ids = itertools.count()


def build(item, sensor: str, seq: int) -> list:
    _, what, arg = item
    topic = f"edgead/frame/{sensor}".encode()
    if what == "frame":
        return encode_frame(part(arg, n=200), seq, sensor)
    if what in ("parts", "raw"):
        return [topic, *arg]
    if what == "cloud":
        cloud = {"nan": np.full((50, 3), np.nan, np.float32), "empty": np.zeros((0, 3), np.float32),
                 "oversized": np.zeros((6000, 3), np.float32)}[arg]
        return encode_frame(cloud, seq, sensor)
    _, raw, buf = encode_frame(part(0, n=40), seq, sensor)
    header = msgpack.unpackb(raw)
    buf = bytes(buf)
    if what == "field":
        key, i = arg
        header[key] = INVALID_VALUES[key][i % len(INVALID_VALUES[key])]
    elif what == "missing":
        del header[arg]
    elif what == "buffer":
        buf = buf[:arg] if arg < 0 else buf + bytes(arg)
    return [topic, msgpack.packb(header), buf]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=8))
def test_fuzz_every_frame_gets_exactly_one_result_and_the_service_lives(service, items):
    _, sensor_sock, client = service
    sensor = f"fz{next(example_ids)}"
    for seq, item in enumerate(items):
        sensor_sock.send_multipart(build(item, sensor, seq))
    results = [recv_result(client) for _ in items]
    assert [r["status"] for r in results] == [item[0] for item in items]
    assert all(r["sensor"] == sensor for r in results)
    for seq, (item, res) in enumerate(zip(items, results, strict=True)):
        if item[0] == "ok":
            assert res["seq"] == seq and res["score"] > 0 and res["error"] == ""
        else:
            assert res["error"] and res["score"] is None
            if item[1] in ("buffer", "cloud"):
                assert res["seq"] == seq  # the frame's identity comes back with its error
    extra = []
    while client.poll(50):
        topic, msg = decode_message(client.recv_multipart())
        extra += [msg] if topic != STATUS_TOPIC else []
    assert extra == []  # exactly one result per frame


def test_after_fuzzing_the_counters_add_up(service):
    svc, _, client = service
    status = wait_status(client)
    assert status["frames_in"] == status["frames_out"] and status["dropped"] == 0
    assert status["errors"] <= status["frames_out"]
