"""Load for tests/test_serve.py, run as a process of its own: CLIENTS clients (gRPC and HTTP in turn) send one video
until the server refuses them; prints ``answered`` once THRESHOLD answers came back, and at the end writes every
outcome (``[kind, detail]``: ok, wrong, refused, hang, unrefused) to OUT as JSON.

A process of its own because 16 client threads inside the test process starved the test's main thread of the GIL for
tens of seconds on a 2-core CI machine: it sent the signal late and timed the server's exit wrong.

    python tests/serve_load.py GRPC_PORT HTTP_PORT VIDEO EXPECTED_LABELS_JSON CLIENTS THRESHOLD OUT
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http

from vtc_deploy.serve_client import infer

MAX_SECONDS = 240.0  # a client still answered after this long ends as "unrefused" (the server never stopped)


def main() -> None:
    grpc_port, http_port, video, expected_json, clients, threshold, out = sys.argv[1:8]
    expected = json.loads(expected_json)
    data = np.array([[Path(video).read_bytes()]], dtype=object)
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()
    announced = threading.Event()
    end = time.monotonic() + MAX_SECONDS

    def record(kind: str, detail: str) -> None:
        with lock:
            outcomes.append((kind, detail))
            if sum(k in ("ok", "wrong") for k, _ in outcomes) >= int(threshold) and not announced.is_set():
                announced.set()
                print("answered", flush=True)

    def client_loop(i: int) -> None:
        use_http = i % 2 == 1
        client = (
            http.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=60)
            if use_http
            else grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        )
        n = 0
        while time.monotonic() < end:
            kw = {} if use_http else {"client_timeout": 60}
            try:
                answer = infer(client, "vtc_video", "video", data, "BYTES", f"c{i}-{n}", **kw)
            except Exception as exc:  # refused (or, the bug the test looks for, timed out)
                text = str(exc)
                kind = "hang" if "Deadline" in text or "timed out" in text.lower() else "refused"
                record(kind, text.splitlines()[0] if text else type(exc).__name__)
                return
            ok = answer["error"][0][0] == b"" and [x.decode() for x in answer["labels"][0]] == expected
            record("ok" if ok else "wrong", str(answer["error"][0][0]))
            n += 1
        record("unrefused", f"client {i} still answered after {MAX_SECONDS:g} s")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(int(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(outcomes))


if __name__ == "__main__":
    main()
