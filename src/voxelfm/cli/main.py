"""The ``voxelfm`` command. Each sub-command lives in its own module with a ``register(app)``."""

from __future__ import annotations

import typer

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
