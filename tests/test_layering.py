"""Imports point one way (ARCHITECTURE.md): core (``vtc_deploy/*``) <- runtimes/ <- export/ <- train/, the CLI on top.

Every module of the four packages is parsed (``ast``, nothing is imported) and every import is read, including the
lazy ones inside functions and those under ``TYPE_CHECKING``; an edge that points the wrong way fails with the module
and the edge. The core may use the backends (the pipeline runs graphs through ``runtimes.create_backend``), but never
``export/`` or ``train/``; ``runtimes/`` never imports ``export/``, ``train/`` or torch. The torch-free half of the core
(every core module but the torch-side ``TORCH_SIDE``) imports neither torch nor the torch side, not even lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"vtc_deploy": ROOT / "vtc_deploy", "vtc_deploy.runtimes": ROOT / "runtimes"}
PACKAGES |= {"vtc_deploy.export": ROOT / "export", "vtc_deploy.train": ROOT / "train"}

# Which layers each layer may import (its own included). The CLI modules are on top and may import anything.
ALLOWED = {
    "core": {"core", "runtimes"},
    "runtimes": {"core", "runtimes"},
    "export": {"core", "runtimes", "export"},
    "train": {"core", "runtimes", "export", "train"},
    "cli": {"core", "runtimes", "export", "train", "cli"},
}
TORCH = ("torch", "torchvision", "open_clip")
# ARCHITECTURE.md's names, and the two modules split out of checkpoint.py (weights reading, open_clip construction)
TORCH_SIDE = {
    "vtc_deploy.model",
    "vtc_deploy.checkpoint",
    "vtc_deploy.weights",
    "vtc_deploy.openclip",
    "vtc_deploy.text_classifier",
}


def layer(module: str) -> str:
    """The layer of a module inside vtc_deploy."""
    parts = module.split(".")
    if parts[:2] in (["vtc_deploy", "cli"], ["vtc_deploy", "__main__"]):
        return "cli"
    if len(parts) >= 2 and parts[1] in ("runtimes", "export", "train"):
        return parts[1]
    return "core"


def modules() -> dict[str, Path]:
    """Every module of the four packages (the CLI package too, once ``cli.py`` becomes ``cli/``)."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if any(part in ("cpp", "data") for part in rel):
                continue
            name = ".".join((package, *rel))
            found[name.removesuffix(".__init__")] = path
    return found


def imported(source: str, module: str, *, is_package: bool = False, known: frozenset[str] = frozenset()) -> set[str]:
    """The absolute names ``module`` imports anywhere in ``source`` (module level, functions, TYPE_CHECKING)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            # ``from vtc_deploy import export`` or ``from . import base`` imports a module: count that edge too
            names.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known)
    return names


def all_edges() -> dict[str, set[str]]:
    mods = modules()
    known = frozenset(mods)
    return {
        name: imported(path.read_text("utf-8"), name, is_package=path.name == "__init__.py", known=known)
        for name, path in mods.items()
    }


def test_the_walk_sees_every_package_and_lazy_imports() -> None:
    edges = all_edges()
    assert {layer(name) for name in edges} == {"core", "runtimes", "export", "train", "cli"}
    assert "vtc_deploy.runtimes.trt_build" in edges and "vtc_deploy.graph" in edges and "vtc_deploy.staging" in edges
    # the CLI imports the trainer only inside the train command: the walk must see it
    cli_edges = set().union(*(targets for name, targets in edges.items() if layer(name) == "cli"))
    assert any(t.startswith("vtc_deploy.train") for t in cli_edges)


def test_imports_resolve_relative_and_lazy() -> None:
    source = (
        "from . import base\n"
        "from .cuda import check\n"
        "def f():\n"
        "    from vtc_deploy.export.precision import to_fp16\n"
        "    import torch.nn\n"
        "if True:\n"
        "    from ..errors import VtcError\n"
    )
    got = imported(source, "vtc_deploy.runtimes.trt", known=frozenset({"vtc_deploy.runtimes.base"}))
    assert got == {
        "vtc_deploy.runtimes",
        "vtc_deploy.runtimes.base",
        "vtc_deploy.runtimes.cuda",
        "vtc_deploy.export.precision",
        "torch.nn",
        "vtc_deploy.errors",
    }


@pytest.mark.parametrize(
    ("module", "target", "ok"),
    [
        ("vtc_deploy.pipeline", "vtc_deploy.runtimes", True),
        ("vtc_deploy.rebake", "vtc_deploy.export.graph", False),
        ("vtc_deploy.runtimes.trt", "vtc_deploy.export.engine", False),
        ("vtc_deploy.export.api", "vtc_deploy.train.config", False),
        ("vtc_deploy.train.engine", "vtc_deploy.export.api", True),
        ("vtc_deploy.cli", "vtc_deploy.train.engine", True),
        ("vtc_deploy.cli.export", "vtc_deploy.export", True),
        ("vtc_deploy.video", "vtc_deploy.cli", False),
        ("vtc_deploy.pipeline", "torch", False),
        ("vtc_deploy.rebake", "vtc_deploy.checkpoint", False),
        ("vtc_deploy.runtimes.ort", "open_clip", False),
        ("vtc_deploy.checkpoint", "torch", True),
        ("vtc_deploy.checkpoint", "vtc_deploy.model", True),
        ("vtc_deploy.export.api", "vtc_deploy.checkpoint", True),
    ],
)
def test_the_rule_itself(module: str, target: str, ok: bool) -> None:
    assert (not wrong_way(module, target)) == ok


def wrong_way(module: str, target: str) -> str:
    """Why ``module`` importing ``target`` breaks the layering ("" when it does not)."""
    src = layer(module)
    torch_free = src == "runtimes" or (src == "core" and module not in TORCH_SIDE)
    if torch_free and (target.split(".")[0] in TORCH or target in TORCH_SIDE):
        return f"{src} module {module} is torch-free: it never imports torch or the torch side"
    if target != "vtc_deploy" and not target.startswith("vtc_deploy."):
        return ""
    dst = layer(target)
    if dst not in ALLOWED[src]:
        return f"{src} may import only {', '.join(sorted(ALLOWED[src]))}, not {dst}"
    return ""


def test_no_import_points_the_wrong_way() -> None:
    bad = [
        f"{module} imports {target}: {why}"
        for module, targets in sorted(all_edges().items())
        for target in sorted(targets)
        if (why := wrong_way(module, target))
    ]
    assert not bad, "imports against ARCHITECTURE.md's layering:\n" + "\n".join(bad)
