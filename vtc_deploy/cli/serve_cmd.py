"""``vtc-deploy serve``: options -> ``ServeConfig`` -> ``serve.serve`` (Triton Inference Server through PyTriton).
A server's log lines carry the time, as Triton's own do.

Imports: click, vtc_deploy.serve (lazily).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from vtc_deploy.runtimes import BACKENDS
from vtc_deploy.spec import CROPS


@click.command()
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Artifact directory (default: the zero-shot Kinetics-400 model, built once into the cache).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--clips", type=click.IntRange(1), default=1, show_default=True)
@click.option("--crops", type=click.Choice([str(c) for c in CROPS]), default="1", show_default=True)
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True, help="Requests per dynamic batch.")
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Queued requests beyond this are rejected.",
)
@click.option("--max-video-mb", type=float, default=64.0, show_default=True, help="Encoded video size limit.")
@click.option(
    "--max-request-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64.0,
    show_default=True,
    help="Any request larger than this is refused before it is read.",
)
@click.option(
    "--max-frames", type=click.IntRange(1), default=1024, show_default=True, help="Decoded frames per request limit."
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=6.0),
    default=30.0,
    show_default=True,
    help="Seconds from SIGTERM/SIGINT to exit: requests in flight get all but the last 3 s to finish.",
)
def serve(
    model_dir: Path | None,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    backend: str,
    topk: int,
    clips: int,
    crops: str,
    max_batch: int,
    max_queue: int,
    max_video_mb: float,
    max_request_mb: float,
    max_frames: int,
    drain_timeout: float,
) -> None:
    """Serve an artifact with Triton Inference Server (PyTriton): models vtc_video (encoded video bytes) and
    vtc_frames (uint8 frames), HTTP and gRPC, dynamic batching. Ready when /v2/health/ready answers 200; stops on
    Ctrl-C / SIGTERM, draining requests in flight within --drain-timeout."""
    from vtc_deploy.serve import ServeConfig
    from vtc_deploy.serve import serve as run_server

    for handler in logging.getLogger("vtc_deploy").handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    run_server(
        model_dir,
        ServeConfig(
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            backend=backend,
            topk=topk,
            clips=clips,
            crops=int(crops),
            max_batch=max_batch,
            max_queue=max_queue,
            max_video_mb=max_video_mb,
            max_request_mb=max_request_mb,
            max_frames=max_frames,
            drain_timeout=drain_timeout,
        ),
    )
