"""The ``vtc-deploy`` click group and the error boundary around it.

Owns: logging to stderr (``-q``/``-v``) and ``main``: a ``VtcError`` becomes ``vtc-deploy: error: ...`` on one line
and exit status 1, a usage error ``vtc-deploy: usage error: ...`` on one line and exit status 2, Ctrl-C exit 130,
anything unexpected one line naming the exception (``VTC_DEBUG=1`` shows the traceback); and ``not_here``, the
hidden option that turns an option of another command into a usage error naming that command.
Imports: click, vtc_deploy.errors.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from vtc_deploy.errors import VtcError, one_line

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


def _setup_logging(quiet: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vtc_deploy")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="vtc-deploy", prog_name="vtc-deploy")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def cli(quiet: bool, verbose: bool) -> None:
    """Text4Vis-style video classifiers: export to ONNX/TensorRT and run them on videos."""
    _setup_logging(quiet, verbose)


def not_here(*decls: str, reason: str, is_flag: bool = False) -> Callable[[Any], Any]:
    """A hidden option that belongs to another command: giving it is a usage error that says where it applies."""

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if param.name is not None and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            given = param.secondary_opts[0] if value is False and param.secondary_opts else param.opts[0]
            raise click.UsageError(f"{given} does not apply here: {reason}", ctx)

    if is_flag:  # --x or --x/--no-x
        return click.option(*decls, is_flag=True, default=None, hidden=True, expose_value=False, callback=refuse)
    return click.option(*decls, default=None, hidden=True, expose_value=False, callback=refuse)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the error boundary around the click group."""
    try:
        rv = cli.main(args=argv, prog_name="vtc-deploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "vtc-deploy"
        message = " ".join(exc.format_message().split())
        click.echo(f"vtc-deploy: usage error: {message} (see '{where} --help')", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"vtc-deploy: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("vtc-deploy: interrupted", err=True)
        sys.exit(130)
    except VtcError as exc:
        if not getattr(exc, "reported_elsewhere", False):  # e.g. torchrun: rank 0 reports for every rank
            click.echo(f"vtc-deploy: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if os.environ.get("VTC_DEBUG"):
            raise
        text = one_line(exc)
        click.echo(
            f"vtc-deploy: internal error: {type(exc).__name__}: {text} (set VTC_DEBUG=1 for the traceback)", err=True
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
