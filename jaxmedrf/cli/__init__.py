"""The ``jaxmedrf`` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (returning its parser) and
``run(args) -> int``. Errors a user can fix (``ValueError``, ``FileNotFoundError``, …) print
one line ``jaxmedrf <cmd>: error: …`` and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "SUBCOMMANDS", "UserError"]

# name -> module (imported lazily so that `jaxmedrf --help` stays fast).
SUBCOMMANDS = {
    "simulate": "jaxmedrf.cli.simulate",
    "reconstruct": "jaxmedrf.cli.reconstruct",
    "evaluate": "jaxmedrf.cli.evaluate",
    "info": "jaxmedrf.cli.info",
    "convert": "jaxmedrf.cli.convert",
    "register": "jaxmedrf.cli.register",
    "render": "jaxmedrf.cli.render",
    "interpolate": "jaxmedrf.cli.interpolate",
}


class UserError(ValueError):
    """An error in the user's input; printed without traceback, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxmedrf",
        description="Neural rendering for medical imaging in JAX: simulate, reconstruct, evaluate.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod in SUBCOMMANDS.items():
        importlib.import_module(mod).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
