"""A minimal sensor process for the restart tests: binds an XPUB, waits for the service to subscribe, sends frames.

    python sensor_process.py ENDPOINT RUN N [--forever]

Sends N frames of a small block (seq 0..N-1, frame ids ``RUN-0`` ...), then exits, or with ``--forever`` goes on
sending until it is killed. Binding retries for a few seconds, so a new process can take over a port whose
previous owner is still going away.
"""

import sys
import time

import numpy as np
import zmq

from edgead.stream.protocol import encode_frame


def block(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.c_[rng.uniform(-20, 20, 1500), rng.uniform(-15, 15, 1500), np.full(1500, 10.0)]
    side = np.c_[np.full(375, 20.0), rng.uniform(-15, 15, 375), rng.uniform(0, 10, 375)]
    return (np.r_[top, side] + rng.normal(0, 0.05, (1875, 3))).astype(np.float32)


def main() -> int:
    endpoint, run, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.linger = 2000
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(endpoint)
            break
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    if not sock.poll(20_000):
        return 3  # the service never subscribed
    sock.recv()
    seq = 0
    while seq < n or "--forever" in sys.argv:
        sock.send_multipart(encode_frame(block(seq % 5), seq, "cam", frame_id=f"{run}-{seq}"))
        seq += 1
        time.sleep(0.05 if seq >= n else 0)  # after the first n: slower than the service, so nothing queues
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
