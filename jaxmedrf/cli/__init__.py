"""The ``jaxmedrf`` command: one entry point, one module per subcommand.

Each subcommand module defines ``HELP`` (its one-line help), ``add_parser(subparsers)``
(returning its parser) and ``run(args) -> int``. Only the subcommand named on the command line
gets its full parser: the flags of the training subcommands come from the library's config
classes (:mod:`jaxmedrf.cli._config_args`), whose modules import JAX, and ``jaxmedrf --help``
needs only the names and ``HELP``. Errors a user can fix (``ValueError``, ``FileNotFoundError``,
…) print one line ``jaxmedrf <cmd>: error: …`` and exit with status 2, no traceback; a value a
config refuses prints the subcommand's usage and ``jaxmedrf <cmd>: error: argument --flag: …``
(as argparse does), status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from jaxmedrf.cli._config_args import ConfigArgumentError, build_configs

__all__ = ["main", "SUBCOMMANDS", "UserError"]

# name -> module (imported lazily so that `jaxmedrf --help` stays fast).
SUBCOMMANDS = {
    "simulate": "jaxmedrf.cli.simulate",
    "preprocess": "jaxmedrf.cli.preprocess",
    "reconstruct": "jaxmedrf.cli.reconstruct",
    "evaluate": "jaxmedrf.cli.evaluate",
    "info": "jaxmedrf.cli.info",
    "convert": "jaxmedrf.cli.convert",
    "register": "jaxmedrf.cli.register",
    "render": "jaxmedrf.cli.render",
    "interpolate": "jaxmedrf.cli.interpolate",
    "geometry": "jaxmedrf.cli.geometry",
    "generate": "jaxmedrf.cli.generate",
    "train-prior": "jaxmedrf.cli.train_prior",
    "explain": "jaxmedrf.cli.explain",
}


class UserError(ValueError):
    """An error in the user's input; printed without traceback, exit status 2."""


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``jaxmedrf`` parser for the command line ``argv``: the subcommand it names (its first
    word that is no option) gets its full parser, the others a stub with their ``HELP``."""
    p = argparse.ArgumentParser(
        prog="jaxmedrf",
        description="Neural rendering for medical imaging in JAX: simulate, reconstruct, evaluate.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, mod in SUBCOMMANDS.items():
        module = importlib.import_module(mod)
        if name == chosen:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        build_configs(args)
    except ConfigArgumentError as e:  # what ArgumentParser.error prints, returned as status 2
        e.parser.print_usage(sys.stderr)
        print(f"{e.parser.prog}: error: {e}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxmedrf {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxmedrf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
