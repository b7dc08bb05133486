"""The ``vtc-deploy`` command line: a thin layer over option objects (one module per command group).

Each command parses its options, builds the options dataclass of the library function it stands for, calls that one
function and prints. Modules: ``app`` (the group, logging, the error boundary ``main``), ``export_cmd`` (export,
verify), ``run_cmd`` (run: whole videos; stream: sliding windows), ``artifact_cmd`` (rebake, build-engine,
triton-repo, info), ``bench_cmd``, ``serve_cmd``, ``train_cmd``. Heavy imports (torch, onnx) happen inside the
commands that need them: ``--help``, ``run`` and ``stream`` stay torch-free.
Imports: click, vtc_deploy (the CLI sits on top of every other package).
"""

from __future__ import annotations

from .app import EXIT_ERROR, EXIT_INTERNAL, EXIT_USAGE, cli, main
from .artifact_cmd import build_engine_cmd, info, rebake, triton_repo
from .bench_cmd import bench
from .export_cmd import export, verify
from .run_cmd import run, stream
from .serve_cmd import serve
from .train_cmd import train

for _command in (export, verify, run, stream, rebake, build_engine_cmd, bench, serve, triton_repo, info, train):
    cli.add_command(_command)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_USAGE",
    "bench",
    "build_engine_cmd",
    "cli",
    "export",
    "info",
    "main",
    "rebake",
    "run",
    "serve",
    "stream",
    "train",
    "triton_repo",
    "verify",
]
