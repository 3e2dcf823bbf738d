"""The edgead wire protocol (schema 1), documented for other-language clients in ``docs/protocol.md``.

Frames (sensor -> service) are 3-part ZeroMQ messages ``[topic, header, points]``: topic ``edgead/frame/<sensor>``,
a msgpack header map, and the raw little-endian point buffer, read zero-copy with ``np.frombuffer``. Results and
status (service -> clients) are 2-part messages ``[topic, msgpack map]`` made of plain msgpack types only (maps,
strings, numbers, booleans, nil, arrays, bin): no ext types, no pickle, so any msgpack library decodes them.
"""

from __future__ import annotations

import time

import msgpack
import numpy as np

SCHEMA = 1
FRAME_PREFIX = "edgead/frame/"
RESULT_PREFIX = "edgead/result/"
STATUS_TOPIC = "edgead/status"
DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
MAX_MESSAGE_BYTES = 128 << 20  # ZMQ_MAXMSGSIZE on the service's SUB socket: a bigger part drops the connection
MAX_HEADER_BYTES = 4096
MAX_ID_LEN = 128  # sensor and frame ids: short printable names
HEADER_KEYS = ("schema", "seq", "t_capture", "sensor", "dtype", "shape", "units", "frame_id")


class FrameError(ValueError):
    """A frame that cannot be used; ``header`` holds what was decoded before the problem (maybe nothing)."""

    def __init__(self, reason: str, header: dict | None = None):
        super().__init__(reason)
        self.header = header or {}


def unpack(data: bytes, max_bin_len: int = 64 << 20):
    """msgpack decode with every size limit set, so a hostile message cannot make us allocate much."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_bin_len, max_str_len=1 << 16,
                           max_array_len=1 << 16, max_map_len=1024, max_ext_len=0, use_list=True)


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=False)


def encode_frame(points: np.ndarray, seq: int, sensor: str, *, t_capture: float | None = None, units: str = "mm",
                 frame_id: str = "") -> list:
    """(N, 3) float32/float64 points -> the 3 message parts. The buffer part is the array itself (no copy)."""
    pts = np.ascontiguousarray(points)
    dtype = {np.dtype("<f4"): "float32", np.dtype("<f8"): "float64"}.get(pts.dtype)
    if dtype is None:
        raise ValueError(f"points must be float32 or float64, got {pts.dtype}")
    header = {"schema": SCHEMA, "seq": int(seq), "t_capture": time.time() if t_capture is None else float(t_capture),
              "sensor": sensor, "dtype": dtype, "shape": list(pts.shape), "units": units,
              "frame_id": frame_id or f"{sensor}-{seq}"}
    return [(FRAME_PREFIX + sensor).encode(), pack(header), pts]


def _valid_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and value.isprintable()


def decode_frame(parts: list, max_points: int) -> tuple[dict, np.ndarray]:
    """3 message parts -> (header, (N, 3) points viewing the buffer). Raises FrameError naming the problem.

    The error's ``header`` keeps the sender's seq/sensor/frame_id whenever those could be read, so the error result
    can be matched to the frame.
    """
    known: dict = {}
    topic = bytes(parts[0]) if parts else b""
    if topic.startswith(FRAME_PREFIX.encode()):
        known["sensor"] = topic[len(FRAME_PREFIX):MAX_ID_LEN + len(FRAME_PREFIX)].decode("utf-8", "replace")
    if len(parts) != 3:
        raise FrameError(f"a frame has 3 parts (topic, header, points), got {len(parts)}", known)
    raw_header, buf = bytes(parts[1]), parts[2]
    if len(raw_header) > MAX_HEADER_BYTES:
        raise FrameError(f"header is {len(raw_header)} bytes, more than {MAX_HEADER_BYTES}", known)
    try:
        header = unpack(raw_header, max_bin_len=0)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise FrameError(f"header is not valid msgpack ({type(exc).__name__})", known) from None
    if not isinstance(header, dict):
        raise FrameError("header must be a msgpack map", known)
    seq = header.get("seq")  # keep what identifies the frame, where well-typed
    if type(seq) is int and seq >= 0:
        known["seq"] = seq
    known.update({k: header[k] for k in ("sensor", "frame_id") if _valid_id(header.get(k))})
    if header.get("schema") != SCHEMA:
        raise FrameError(f"unsupported schema {header.get('schema')!r}; this service speaks schema {SCHEMA}", known)
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise FrameError(f"header lacks {', '.join(missing)}", known)
    if type(header["seq"]) is not int or header["seq"] < 0:
        raise FrameError("header field 'seq' must be a non-negative integer", known)
    for key in ("sensor", "frame_id"):
        if not _valid_id(header[key]):
            raise FrameError(f"header field {key!r} must be a printable string of 1..{MAX_ID_LEN} characters", known)
    sensor = header["sensor"]
    if topic != (FRAME_PREFIX + sensor).encode():
        raise FrameError(f"topic {topic[:80]!r} does not match sensor {sensor!r}", known)
    if not isinstance(header["t_capture"], (int, float)) or isinstance(header["t_capture"], bool):
        raise FrameError("header field 't_capture' must be a number (seconds since the epoch)", known)
    if header["units"] != "mm":
        raise FrameError(f"units must be 'mm', got {header['units']!r}", known)
    dtype = DTYPES.get(header["dtype"]) if isinstance(header["dtype"], str) else None
    if dtype is None:
        raise FrameError(f"dtype must be one of {', '.join(DTYPES)}, got {header['dtype']!r}", known)
    shape = header["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(s) is int for s in shape) and shape[1] == 3
            and shape[0] >= 0):
        raise FrameError(f"shape must be [N, 3], got {shape!r}", known)
    if shape[0] > max_points:
        raise FrameError(f"frame has {shape[0]} points, more than the limit of {max_points}", known)
    nbytes = memoryview(buf).nbytes
    if nbytes != shape[0] * 3 * dtype.itemsize:
        raise FrameError(f"point buffer is {nbytes} bytes; shape {shape} of {header['dtype']} needs "
                         f"{shape[0] * 3 * dtype.itemsize}", known)
    points = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return header, points


def encode_message(topic: str, payload: dict) -> list[bytes]:
    return [topic.encode(), pack(payload)]


def decode_message(parts: list) -> tuple[str, dict]:
    """A result or status message -> (topic, map). Raises ValueError on anything else."""
    if len(parts) != 2:
        raise ValueError(f"a result or status message has 2 parts, got {len(parts)}")
    payload = unpack(bytes(parts[1]))
    if not isinstance(payload, dict):
        raise ValueError("payload must be a msgpack map")
    return bytes(parts[0]).decode(), payload


def point_scores(result: dict) -> np.ndarray | None:
    """The optional per-point scores of a result as (N,) float32 (NaN for points dropped as non-finite)."""
    raw = result.get("point_scores")
    return None if raw is None else np.frombuffer(raw, dtype="<f4")
