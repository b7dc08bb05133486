"""``vtc-deploy train``: options -> ``TrainOptions`` -> ``train.command.run_train``; prints the config, the
evaluation or the run's result as JSON.

Imports: click, vtc_deploy.train.command (torch-free; torch loads only once the config is checked).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None, help="Training config (.json/.yaml)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (logs, checkpoints).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its resume checkpoint.")
@click.option("--eval-only", is_flag=True, help="Evaluate model.init on data.val_list (zero-shot with other classes).")
@click.option("--print-config", is_flag=True, help="Print the effective config as JSON and exit.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    eval_only: bool,
    print_config: bool,
    overrides: tuple[str, ...],
) -> None:
    """Fine-tune a video classifier (Text4Vis recipe); writes OUT/final.pt for `vtc-deploy export`.

    KEY=VALUE overrides the config, e.g. optim.lr=1e-4 data.frames=4 eval.half_classes=true. Several processes:
    torchrun --nproc-per-node N -m vtc_deploy train ...
    """
    from vtc_deploy.train.command import TrainOptions, run_train

    outcome = run_train(
        TrainOptions(
            config_file=config_file,
            out=out,
            resume=resume,
            eval_only=eval_only,
            print_config=print_config,
            overrides=overrides,
        )
    )
    if outcome.json is not None:
        click.echo(outcome.json)
