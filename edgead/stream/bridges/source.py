"""The service's results and status as a bridge receives them: checked before anything reaches a plant system.

A bridge is the quality gate's messenger, so a message it cannot vouch for never turns into a pass. Each result is
checked field by field (types, finite numbers, a decision only on an ``ok`` result); one that still names its
sensor goes on as an error result, so the part stays accounted for, and anything else is dropped. Both are counted
as ``invalid`` and reported on stderr. The status is the service's heartbeat: when none arrives for
``status_timeout`` seconds the service counts as down (``healthy`` false, ``stale`` true).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import zmq

from edgead.stream import protocol
from edgead.stream.security import make_client
from edgead.stream.service import SequenceTracker

MAX_UINT64 = (1 << 64) - 1
MAX_DEPTH = 6  # nesting kept from fields this bridge does not know (the protocol's own go 4 deep)
VERDICTS = ("pass", "reject", "error", "undecided")


class InvalidMessage(ValueError):
    """A message from the service that a bridge will not pass on as it is."""


def _uint(v) -> bool:
    return type(v) is int and 0 <= v <= MAX_UINT64


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(check: Callable) -> Callable:
    return lambda v: v is None or check(v)


def _bool(v) -> bool:
    return isinstance(v, bool)


def _string(v) -> bool:
    return isinstance(v, str)


def _id(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= protocol.MAX_ID_LEN and v.isprintable()


def _region(v) -> bool:
    return isinstance(v, dict) and isinstance(v.get("centroid"), list) and len(v["centroid"]) == 3 and all(
        _number(c) for c in v["centroid"])


RESULT_FIELDS: dict[str, Callable] = {
    "status": lambda v: v in ("ok", "error"), "error": _string, "not_inspected": _bool,
    "seq": _optional(_uint), "result_seq": _uint, "sensor": _optional(_id), "frame_id": _optional(_string),
    "t_capture": _optional(_number), "score": _optional(_number), "threshold": _optional(_number),
    "anomalous": _optional(_bool), "n_points": _uint,
    "regions": lambda v: isinstance(v, list) and all(_region(r) for r in v), "model_hash": _string,
}
STATUS_COUNTERS = ("frames_in", "frames_out", "dropped", "seq_gaps", "seq_restarts", "errors", "not_inspected",
                   "reconnects")
STATUS_FIELDS: dict[str, Callable] = {
    **dict.fromkeys(STATUS_COUNTERS, _uint), "uptime_s": _number, "fps": _number, "healthy": _bool,
    "model_name": _string, "model_hash": _string, "backend": _string,
}


def _check_fields(msg: dict, kind: str, fields: dict[str, Callable]) -> None:
    if type(msg.get("schema")) is not int or msg["schema"] != protocol.SCHEMA:
        raise InvalidMessage(f"unsupported {kind} schema {protocol.shown(msg.get('schema'))}; this bridge reads "
                             f"schema {protocol.SCHEMA}")
    if msg.get("type") != kind:
        raise InvalidMessage(f"a {kind} message has type {kind!r}, got {protocol.shown(msg.get('type'))}")
    for key, ok in fields.items():
        if key not in msg:
            raise InvalidMessage(f"{kind} lacks {key!r}")
        if not ok(msg[key]):
            raise InvalidMessage(f"{kind} field {key!r} has an invalid value {protocol.shown(msg[key])}")


def check_result(msg: dict) -> None:
    """Raises InvalidMessage unless ``msg`` is a well-formed schema-2 result that says what it means: an ``ok``
    result with a decision has a score, an ``error`` result has no score and no decision."""
    _check_fields(msg, "result", RESULT_FIELDS)
    if msg["status"] == "error" and (msg["anomalous"] is not None or msg["score"] is not None):
        raise InvalidMessage("an error result carries a score or a decision")
    if msg["status"] == "ok" and (msg["error"] or msg["score"] is None):
        raise InvalidMessage("an ok result without a score or with an error")


def verdict(result: dict) -> str:
    """What the part gets: ``pass`` only for an ok result judged not anomalous; ``undecided`` without a threshold."""
    if result["status"] != "ok":
        return "error"
    if result["anomalous"] is None:
        return "undecided"
    return "reject" if result["anomalous"] else "pass"


def as_error(msg: dict, reason: str) -> dict:
    """An error result for the part ``msg`` names, built only from the identifying fields that check out."""
    keep = {k: msg.get(k) for k in ("seq", "result_seq", "sensor", "frame_id", "t_capture", "model_hash")
            if RESULT_FIELDS[k](msg.get(k))}
    return {"schema": protocol.SCHEMA, "type": "result", "seq": None, "frame_id": None, "t_capture": None,
            "model_hash": "", **keep, "status": "error", "error": f"bridge: invalid result from the service: {reason}",
            "not_inspected": False, "score": None, "threshold": None, "anomalous": None, "n_points": 0,
            "regions": []}


def jsonable(value, depth: int = 0):
    """Plain JSON values: non-finite floats become null, binary (per-point scores) is left out."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(value, list):
        return [jsonable(v, depth + 1) for v in value if not isinstance(v, (bytes, bytearray))]
    return value


def subscribe(ctx: zmq.Context, endpoint: str, curve_secret: str | None = None,
              curve_server_key: str | None = None) -> zmq.Socket:
    """A SUB socket connected to the service's result endpoint, subscribed to results and status."""
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = 10_000  # results wait here rather than be dropped by the service's PUB
    if curve_secret:
        if not curve_server_key:
            raise ValueError("CURVE needs the service's public key too (--curve-server-key)")
        make_client(sock, curve_secret, curve_server_key)
    sock.subscribe(protocol.RESULT_PREFIX.encode())
    sock.subscribe(protocol.STATUS_TOPIC.encode())
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise ValueError(f"cannot connect to {endpoint}: {exc}") from None
    return sock


class Intake:
    """Checks each message from the service and keeps the bridge-side counters and the service's last status.

    ``missed`` counts results the service published that never reached the bridge (gaps in ``result_seq``: the
    PUB socket drops for a subscriber that is away or too slow); ``service_restarts`` counts ``result_seq``
    starting over.
    """

    def __init__(self, status_timeout: float, name: str):
        self.status_timeout, self.name = status_timeout, name
        self.counts = dict.fromkeys(("messages", "results", "statuses", "invalid"), 0)
        self.result_seqs = SequenceTracker()
        self.last_status: dict | None = None
        self.status_at = time.monotonic()  # the bridge's start counts as the last sign of life

    def accept(self, parts: list) -> tuple[str, dict] | None:
        """Message parts -> ("result", result) or ("status", status), or None when dropped (counted, reported)."""
        self.counts["messages"] += 1
        msg: dict = {}
        try:
            try:
                topic, msg = protocol.decode_message(parts)
            except Exception as exc:  # msgpack raises several unrelated types on garbage
                raise InvalidMessage(f"not a result or status message ({type(exc).__name__}: {exc})") from None
            if topic == protocol.STATUS_TOPIC:
                _check_fields(msg, "status", STATUS_FIELDS)
                self.counts["statuses"] += 1
                self.last_status, self.status_at = msg, time.monotonic()
                return "status", msg
            check_result(msg)
        except InvalidMessage as exc:
            self.counts["invalid"] += 1
            self.warn(f"invalid message from the service: {exc}")
            if msg.get("type") != "result" or not _id(msg.get("sensor")):
                return None
            msg = as_error(msg, str(exc))
        self.counts["results"] += 1
        if _uint(msg.get("result_seq")):
            self.result_seqs.observe("service", msg["result_seq"])
        return "result", msg

    def status(self) -> dict:
        """The service's last status, or when it is older than ``status_timeout`` (or there is none), a status that
        says the service is down."""
        age = time.monotonic() - self.status_at
        if self.last_status is not None and age <= self.status_timeout:
            return dict(self.last_status, stale=False)
        return dict(self.last_status or {"schema": protocol.SCHEMA, "type": "status"}, healthy=False, stale=True,
                    error=f"no status from edgead serve for {age:.1f} s")

    def counters(self) -> dict[str, int]:
        return {**self.counts, "missed": self.result_seqs.gaps, "service_restarts": self.result_seqs.restarts}

    def warn(self, text: str) -> None:
        print(f"edgead bridge {self.name}: {text}", file=sys.stderr, flush=True)
