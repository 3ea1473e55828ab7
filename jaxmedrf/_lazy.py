"""Lazy package namespaces (PEP 562): a package's public names load on first use.

``import jaxmedrf`` and the CLI's ``--help`` then import no JAX; the first access of a name
imports its module once and caches the value as a plain attribute.
"""

from __future__ import annotations

import importlib


def lazy_namespace(package: str, exports: dict[str, tuple[str, str | None]], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to
    ``(module, attribute)`` (attribute ``None``: the module itself); other names resolve to the
    package's submodules."""

    def __getattr__(name: str):
        if name in exports:
            module, attr = exports[name]
            value = importlib.import_module(module)
            if attr is not None:
                value = getattr(value, attr)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
