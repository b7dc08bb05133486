"""A client of ``vtc-deploy serve`` (tritonclient, HTTP or gRPC), shared by the serving tests and benchmark and
usable as an example (torch-free).

Owns: ``OUTPUTS`` (what both models answer), ``connect`` (a tritonclient client for one protocol) and ``infer`` (one
request, every output as numpy).
Imports: numpy; tritonclient lazily (``pip install 'vtc-deploy[serve]'``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Protocol = Literal["http", "grpc"]
OUTPUTS = ("labels", "indices", "probs", "logits", "embedding", "error")


def _module(protocol: Protocol) -> Any:
    if protocol == "http":
        import tritonclient.http as http

        return http
    import tritonclient.grpc as grpc

    return grpc


def connect(protocol: Protocol, port: int, *, host: str = "127.0.0.1", network_timeout: float | None = None) -> Any:
    """A tritonclient ``InferenceServerClient`` for ``host:port`` (``network_timeout``: HTTP only, seconds)."""
    module = _module(protocol)
    if protocol == "http" and network_timeout is not None:
        return module.InferenceServerClient(f"{host}:{port}", network_timeout=network_timeout)
    return module.InferenceServerClient(f"{host}:{port}")


def infer(
    client: Any, model: str, name: str, array: np.ndarray, dtype: str, request_id: str = "", **options: Any
) -> dict[str, np.ndarray]:
    """One request to ``model`` with input ``name`` (``dtype``: Triton's, e.g. ``BYTES`` for an encoded video
    ``[[bytes]]`` of ``vtc_video``, ``UINT8`` for frames ``[1, N, H, W, 3]`` of ``vtc_frames``); every output in
    ``OUTPUTS`` as numpy. ``options`` go to ``client.infer`` (e.g. ``client_timeout``)."""
    import tritonclient.grpc as grpc

    module = _module("grpc" if isinstance(client, grpc.InferenceServerClient) else "http")
    tensor = module.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    outputs = [module.InferRequestedOutput(n) for n in OUTPUTS]
    result = client.infer(model, [tensor], outputs=outputs, request_id=request_id, **options)
    return {n: result.as_numpy(n) for n in OUTPUTS}
