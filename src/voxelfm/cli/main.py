"""The ``voxelfm`` command. Each sub-command lives in its own module with a ``register(app)``."""

from __future__ import annotations

import os

import typer

# Threads that wait at an OpenMP barrier sleep instead of spinning (libgomp, torch's OpenMP, spins by
# default). On a shared machine spinning threads take the cores the working threads need: the demo's
# 2-thread pretraining step took 5.5 s passive against 33 s spinning at load ~8; on 2 idle cores
# passive costs ~17 % there (0.70 vs 0.60 s/step) and the numbers are identical (benchmarks/README.md,
# "Two threads for the demo's pretraining"). Read when torch loads, so set before any command imports
# it; a user's own OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    name="voxelfm",
    help="3D CT foundation models: read CT, extract features, pretrain, probe, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """3D CT foundation models: read CT, extract features, pretrain, probe, evaluate."""
    # An explicit callback keeps `voxelfm <command>` a command group even with one command.


def _register_all() -> None:
    # Imported here so each module stays import-light; commands import heavy libraries lazily.
    from voxelfm.cli import (
        convert,
        demo,
        embed,
        evaluate,
        info,
        models,
        phantom,
        pretrain,
        probe,
        report,
        retrieve,
        store,
    )

    for module in (info, demo, report, embed, convert, models, phantom, pretrain, probe, evaluate, retrieve, store):
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
