"""The edgead wire protocol, documented for other-language clients in ``docs/protocol.md``: the one place that
defines frames, results and status messages.

Frames (sensor -> service, schema 1) are 3-part ZeroMQ messages ``[topic, header, points]``: topic
``edgead/frame/<sensor>``, a msgpack header map, and the raw little-endian point buffer, read zero-copy with
``np.frombuffer``. Results and status (service -> clients, schema 2) are 2-part messages ``[topic, msgpack map]``
made of plain msgpack types only (maps, strings, numbers, booleans, nil, arrays, bin): no ext types, no pickle, so
any msgpack library decodes them.
"""

from __future__ import annotations

import reprlib
import time
from dataclasses import dataclass

import msgpack
import numpy as np

FRAME_SCHEMA = 1  # frames: unchanged since the first release
SCHEMA = 2  # results and status: 2 split `lost` into seq_gaps / seq_restarts and added not_inspected
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
    header = {"schema": FRAME_SCHEMA, "seq": int(seq),
              "t_capture": time.time() if t_capture is None else float(t_capture), "sensor": sensor, "dtype": dtype,
              "shape": list(pts.shape), "units": units, "frame_id": frame_id or f"{sensor}-{seq}"}
    return [(FRAME_PREFIX + sensor).encode(), pack(header), pts]


def _valid_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and value.isprintable()


_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 3, 60, 60


def shown(value) -> str:
    """A bounded repr of untrusted data for error messages (a header nested 1000 deep must not recurse)."""
    return _short.repr(value)


def frame_identity(parts: list) -> tuple[str, int] | None:
    """(sensor, seq) of a frame from its header alone, or None when they cannot be read. Cheap (the header is at
    most MAX_HEADER_BYTES), so the receiver can track sequences before flow control drops any frame."""
    if len(parts) != 3 or memoryview(parts[1]).nbytes > MAX_HEADER_BYTES:
        return None
    try:
        header = unpack(bytes(parts[1]), max_bin_len=0)
    except Exception:  # garbage: decode_frame will say what is wrong with it
        return None
    if not isinstance(header, dict) or type(header.get("seq")) is not int or header["seq"] < 0:
        return None
    return (header["sensor"], header["seq"]) if _valid_id(header.get("sensor")) else None


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
    schema = header.get("schema")
    if type(schema) is not int or schema != FRAME_SCHEMA:  # not True, not 1.0
        raise FrameError(f"unsupported frame schema {shown(schema)}; this service reads frames of schema "
                         f"{FRAME_SCHEMA}", known)
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
        raise FrameError(f"units must be 'mm', got {shown(header['units'])}", known)
    dtype = DTYPES.get(header["dtype"]) if isinstance(header["dtype"], str) else None
    if dtype is None:
        raise FrameError(f"dtype must be one of {', '.join(DTYPES)}, got {shown(header['dtype'])}", known)
    shape = header["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(s) is int for s in shape) and shape[1] == 3
            and shape[0] >= 0):
        raise FrameError(f"shape must be [N, 3], got {shown(shape)}", known)
    if shape[0] > max_points:
        raise FrameError(f"frame has {shape[0]} points, more than the limit of {max_points}", known)
    nbytes = memoryview(buf).nbytes
    if nbytes != shape[0] * 3 * dtype.itemsize:
        raise FrameError(f"point buffer is {nbytes} bytes; shape {shape} of {header['dtype']} needs "
                         f"{shape[0] * 3 * dtype.itemsize}", known)
    points = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return header, points


@dataclass(frozen=True)
class Model:
    """The engine a service runs, as results and status name it."""

    name: str
    hash: str
    backend: str


def result(header: dict, *, result_seq: int, t_received: float, model: Model, threshold: float | None,
           dropped_frames: int, latency_ms: dict[str, float], error: str = "", not_inspected: bool = False,
           score: float | None = None, anomalous: bool | None = None, n_points: int = 0, n_invalid: int = 0,
           regions: list | None = None, point_scores: np.ndarray | None = None) -> dict:
    """The result map of one frame (``docs/protocol.md``). ``header`` is what could be read of the frame's header.

    An error result (``error`` set) carries no score, no decision and no regions: nothing in it reads as a pass."""
    t_capture = header.get("t_capture")
    out = {
        "schema": SCHEMA, "type": "result", "status": "error" if error else "ok", "error": error,
        "not_inspected": bool(error) and not_inspected,
        "seq": header.get("seq"), "result_seq": result_seq, "sensor": header.get("sensor"),
        "frame_id": header.get("frame_id"),
        "t_capture": float(t_capture) if isinstance(t_capture, (int, float)) and not isinstance(t_capture, bool)
        else None,
        "t_received": t_received, "t_published": None,
        "score": None if error else score, "threshold": threshold, "anomalous": None if error else anomalous,
        "n_points": n_points, "n_invalid": n_invalid, "regions": [] if error else list(regions or []),
        "units": "mm", "model_name": model.name, "model_hash": model.hash, "backend": model.backend,
        "dropped_frames": dropped_frames, "latency_ms": {k: round(v, 3) for k, v in latency_ms.items()},
    }
    if point_scores is not None and not error:
        out["point_scores"] = np.asarray(point_scores, dtype="<f4").tobytes()
    return out


def status(*, t: float, uptime_s: float, counters: dict[str, int], fps: float, latency_ms: dict[str, float | None],
           policy: str, queue: int, model: Model, healthy: bool) -> dict:
    """The status map (``docs/protocol.md``): ``counters`` holds frames_in, frames_out, dropped, seq_gaps,
    seq_restarts, errors, not_inspected and reconnects."""
    return {"schema": SCHEMA, "type": "status", "t": t, "uptime_s": uptime_s, **counters, "fps": fps,
            "latency_ms": latency_ms, "policy": policy, "queue": queue, "model_name": model.name,
            "model_hash": model.hash, "backend": model.backend, "healthy": healthy}


def describe(r: dict) -> str:
    """One readable line for a result: verdict, score against threshold, the largest regions, latency (what
    ``edgead demo`` prints and ``edgead serve -v`` logs)."""
    head = f"#{r['seq'] if r['seq'] is not None else '?':>4} {r['frame_id'] or '':<20}"
    if r["status"] != "ok":
        return f"{head} ERROR {r['error']}"
    verdict = {True: "ANOMALOUS", False: "ok", None: "(no threshold)"}[r["anomalous"]]
    line = f"{head} score {r['score']:7.3f} / {r['threshold'] or float('nan'):.3f}  {verdict:<9}"
    for reg in r["regions"][:2]:
        c, e = reg["centroid"], reg["extent"]
        line += f"  [{reg['n_points']} pts at ({c[0]:.0f}, {c[1]:.0f}, {c[2]:.0f}) mm, {max(e):.1f} mm]"
    if len(r["regions"]) > 2:
        line += f" +{len(r['regions']) - 2} more"
    return line + f"  {r['latency_ms'].get('total', 0):.0f} ms"


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
