"""Command-line flags generated from the library's config dataclasses: one source for each default.

nerfstudio builds its command line from its config dataclasses with tyro; this is the same idea
on argparse, for the fields that a subcommand exposes. A :class:`Flag` names one field of a
config (a dotted path through nested configs, e.g. ``"field.encoding.log2_table_size"``) and the
flag that sets it; :class:`ConfigArgs` adds those flags to a parser and builds the config from
the parsed arguments:

* default: the field's value in the subcommand's default config instance, so that a nested
  config's own defaults count (NAF's hash grid has 512 finest cells, not ``HashGridConfig``'s
  2048);
* type: the field's annotation (``int | None`` → ``int``, ``tuple[int, ...]`` → ``nargs="+"``,
  ``bool`` → ``store_true``), else the default's type;
* choices: a ``Literal`` annotation, else the tuple the flag names (a constant the library
  exports: ``jaxmedrf.mri.inr.BASES``, the keys of ``jaxmedrf.registration.LOSSES``, …);
* range: none here. The config checks its own fields (``__post_init__``); its ``ValueError``
  becomes an argparse-style error naming the flag (:class:`ConfigArgumentError`, exit status 2).

The config classes live in modules that import JAX, so a subcommand's parser is built only when
that subcommand is named (:func:`jaxmedrf.cli._parser`): ``jaxmedrf --help`` loads no JAX.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["ConfigArgs", "ConfigArgumentError", "Flag", "build_configs", "field_default", "param_default"]

_UNSET = object()


class ConfigArgumentError(ValueError):
    """A config refused the parsed flags; ``str(self)`` reads ``argument --flag: <the config's message>``."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag that sets one field of a config.

    Attributes:
      path: the field, dotted through nested configs (``"field.encoding.n_levels"``).
      flag: the option string (``"--hash-levels"``); the argparse ``dest`` follows from it.
      help: help text (the default is appended by the parser's formatter or by
        :meth:`ConfigArgs.add_to`).
      choices: the allowed values, where the annotation is no ``Literal``: a tuple the library
        exports (never a restated list).
      cli_values: command-line word → config value, where the flag speaks another language
        than the field (``--precision mixed`` → ``compute_dtype="bfloat16"``); its keys are the
        choices.
      none_as: the command-line value that stands for the field's ``None`` (``--multi-levels 0``
        for ``multi_start_levels=None``).
      metavar: argparse metavar.
    """

    path: str
    flag: str
    help: str
    choices: Sequence[Any] | None = None
    cli_values: Mapping[str, Any] | None = None
    none_as: Any = _UNSET
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def to_config(self, value):
        """The config value of the parsed command-line ``value``."""
        if self.cli_values is not None:
            return self.cli_values[value]
        if self.none_as is not _UNSET and value == self.none_as:
            return None
        if isinstance(value, list):
            return tuple(value)
        return value

    def to_cli(self, value):
        """The command-line value of the config ``value`` (the flag's default)."""
        if self.cli_values is not None:
            words = [k for k, v in self.cli_values.items() if v == value]
            if not words:
                raise ValueError(f"{self.flag}: the config's default {value!r} has no command-line word "
                                 f"in {dict(self.cli_values)}")
            return words[0]
        if self.none_as is not _UNSET and value is None:
            return self.none_as
        return value


def field_default(cls, name: str):
    """The default of field ``name`` of dataclass ``cls`` (for a dataclass with required fields)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default")


def param_default(fn: Callable, name: str):
    """The default of parameter ``name`` of function ``fn``."""
    default = inspect.signature(fn).parameters[name].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{fn.__name__}({name}=…) has no default")
    return default


def _owner(config, path: str):
    """``(the config holding the field, the field's name)`` of a dotted ``path``."""
    *parents, leaf = path.split(".")
    for name in parents:
        config = getattr(config, name)
    if not dataclasses.is_dataclass(config) or leaf not in {f.name for f in dataclasses.fields(config)}:
        raise AttributeError(f"{type(config).__name__} has no field {leaf!r} (path {path!r})")
    return config, leaf


def _hint(cls, name: str):
    """The resolved annotation of field ``name`` of ``cls``, or ``None`` where it cannot be resolved."""
    try:
        return typing.get_type_hints(cls)[name]
    except Exception:  # an annotation naming something only imported for type checking
        return None


def _argument_kwargs(flag: Flag, hint, default) -> dict:
    """argparse keywords (``type``/``nargs``/``choices``/``action``) for a field of annotation ``hint``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = members[0] if len(members) == 1 else None
    if flag.cli_values is not None:
        return {"choices": tuple(flag.cli_values)}
    kw: dict[str, Any] = {}
    choices = flag.choices
    if typing.get_origin(hint) is typing.Literal:
        choices = choices or typing.get_args(hint)
        hint = type(typing.get_args(hint)[0])
    if hint is bool or (hint is None and isinstance(default, bool)):
        return {"action": "store_true"} if default is False else {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple or (hint is None and isinstance(default, tuple)):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        kw["nargs"] = "+"
        hint = items[0] if items else (type(default[0]) if default else str)
    if hint not in (int, float, str):
        hint = type(default) if default is not None and not isinstance(default, (list, tuple)) else str
    if hint is not str:
        kw["type"] = hint
    if choices is not None:
        kw["choices"] = tuple(choices)
    return kw


class ConfigArgs:
    """Flags for chosen fields of one config, and the config built from the parsed flags.

    Args:
      dest: the attribute of the parsed arguments that receives the built config.
      config: the subcommand's default config (the library's ``Config()`` unless the CLI
        differs on purpose, which the caller then says beside it).
      flags: the fields exposed, with their flags and help.
      finish: applied to the built config (fields the CLI derives from others, e.g. NAF's
        ``lr_final`` from ``--lr``); its ``ValueError`` names no flag.
      title: the argument group's title in ``--help`` (``None``: no group).
    """

    def __init__(self, dest: str, config, flags: Sequence[Flag], *, finish: Callable[[Any], Any] | None = None,
                 title: str | None = None):
        for f in flags:
            _owner(config, f.path)  # a typo in a path fails when the parser is built, i.e. in every test of it
        self.dest, self.config, self.flags, self.finish, self.title = dest, config, tuple(flags), finish, title
        self.parser: argparse.ArgumentParser | None = None

    def add_to(self, parser: argparse.ArgumentParser):
        """Adds the flags to ``parser``, in a group when ``title`` is set; returns the group (or
        ``parser``), where the caller may add the flags that go with them."""
        self.parser = parser
        shows_defaults = issubclass(getattr(parser, "formatter_class", object), argparse.ArgumentDefaultsHelpFormatter)
        target = parser.add_argument_group(self.title) if self.title else parser
        for f in self.flags:
            owner, leaf = _owner(self.config, f.path)
            value = getattr(owner, leaf)
            kw = _argument_kwargs(f, _hint(type(owner), leaf), value)
            default = f.to_cli(value)
            text = f.help
            if not shows_defaults and default is not None and "action" not in kw and "%(default)" not in text:
                text += " (default: %(default)s)"
            if f.metavar is not None:
                kw["metavar"] = f.metavar
            if kw.get("nargs"):
                default = list(default)
            target.add_argument(f.flag, dest=f.dest, default=default, help=text, **kw)
        parser.set_defaults(**{self.dest: self})
        return target

    def build(self, args: argparse.Namespace):
        """The config of the parsed ``args``.

        Raises:
          ConfigArgumentError: the config refused a value; the message names the flag(s) whose
            field the config's message names (``argument --log2-table-size: HashGridConfig.…``).
        """
        values = {f.path: f.to_config(getattr(args, f.dest)) for f in self.flags}
        try:
            config = _replace(self.config, values)
        except ValueError as e:
            named = self._flags_named(str(e))
            prefix = f"argument {'/'.join(f.flag for f in named)}: " if named else ""
            raise ConfigArgumentError(self.parser, f"{prefix}{e}") from e
        if self.finish is not None:
            try:
                config = self.finish(config)
            except ValueError as e:
                raise ConfigArgumentError(self.parser, str(e)) from e
        return config

    def _flags_named(self, message: str) -> list[Flag]:
        """The flags whose field ``message`` names: as ``Class.field`` where it says so, else by word."""
        fields = [(f, *_owner(self.config, f.path)) for f in self.flags]
        qualified = [f for f, owner, leaf in fields if f"{type(owner).__name__}.{leaf}" in message]
        return qualified or [f for f, _, leaf in fields if re.search(rf"\b{re.escape(leaf)}\b", message)]


def _replace(config, values: Mapping[str, Any]):
    """``config`` with the dotted paths in ``values`` replaced (nested configs rebuilt, inner first)."""
    own, nested = {}, {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    for head, sub in nested.items():
        own[head] = _replace(getattr(config, head), sub)
    return dataclasses.replace(config, **own) if own else config


def build_configs(args: argparse.Namespace) -> argparse.Namespace:
    """Replaces every :class:`ConfigArgs` left in ``args`` by the subcommand's defaults with the
    config it builds from ``args``; returns ``args``.

    Raises:
      ConfigArgumentError: as :meth:`ConfigArgs.build`.
    """
    for name, value in list(vars(args).items()):
        if isinstance(value, ConfigArgs):
            setattr(args, name, value.build(args))
    return args
