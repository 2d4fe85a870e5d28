"""The ``teegate`` command tree.

Each command group lives in ``teegate/commands/<group>.py`` as a click command or group;
they are imported lazily so ``teegate --help`` stays fast and one area's imports never slow
another's command. Add an area by adding one line to ``_COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

import click

from teegate.errors import TeegateError

__all__ = ["main"]

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "aesm": "teegate.commands.aesm:aesm",
    "collateral": "teegate.commands.collateral:collateral",
    "host": "teegate.commands.host:host",
    "k8s": "teegate.commands.k8s:k8s",
    "kbs": "teegate.commands.kbs:kbs",
    "pccs": "teegate.commands.pccs:pccs",
    "qgs": "teegate.commands.qgs:qgs",
    "quote": "teegate.commands.quote:quote",
    "register": "teegate.commands.register:register_command",
    "sim": "teegate.commands.sim:sim",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="teegate")
def cli() -> None:
    """teegate — attestation for confidential workloads (Intel TDX and SGX)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command tree; teegate errors become one stderr line and exit 1."""
    try:
        cli.main(args=argv, prog_name="teegate", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except TeegateError as exc:
        click.echo(f"teegate: error: {exc.diagnostics()}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
