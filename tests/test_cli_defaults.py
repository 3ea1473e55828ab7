"""One source for each default (#20): the CLI's config flags take default, type, choices and range
from the config dataclasses (``jaxmedrf/cli/_config_args.py``).

* parsing a subcommand with no optional flag builds the library's default config;
* every flag reaches its own field, and only it;
* a value the config refuses exits 2 naming the flag, before any input is read;
* a value outside a flag's choices exits 2.
"""

import dataclasses
import subprocess
import sys
from typing import Literal

import pytest

from jaxmedrf.cli import _parser, main
from jaxmedrf.cli._config_args import ConfigArgs, ConfigArgumentError, Flag, build_configs

#: subcommand -> a command line with only its required arguments (no input is read by parsing).
MINIMAL = {
    "reconstruct": ["reconstruct", "in.npz", "--out", "out.npz"],
    "register": ["register", "--volume", "ct.npz", "--xray", "xray.npz"],
    "interpolate": ["interpolate", "--phantom"],
}


def _defaults():
    from jaxmedrf.mri.inr import INRConfig
    from jaxmedrf.mri.smore import SMOREConfig
    from jaxmedrf.recon.naf import NAFConfig
    from jaxmedrf.registration import RegistrationConfig

    return {"reconstruct": {"naf_config": NAFConfig()},
            "register": {"registration_config": RegistrationConfig()},
            "interpolate": {"inr_config": INRConfig(), "smore_config": SMOREConfig()}}


def _sub(cmd):
    """The full parser of subcommand ``cmd``."""
    return _parser([cmd])._subparsers._group_actions[0].choices[cmd]


def _parse(argv):
    """``(parsed args with the ConfigArgs still in place, the subcommand's ConfigArgs by dest)``."""
    args = _parser(argv).parse_args(argv)
    specs = {k: v for k, v in vars(args).items() if isinstance(v, ConfigArgs)}
    return args, specs


@pytest.mark.parametrize("cmd", sorted(MINIMAL))
def test_no_flags_build_the_library_default_config(cmd):
    args, specs = _parse(MINIMAL[cmd])
    expected = _defaults()[cmd]
    assert sorted(specs) == sorted(expected)
    build_configs(args)
    for dest, config in expected.items():
        # No documented difference at the defaults: reconstruct's lr_final = --lr / 10 is 1e-3 = NAFConfig().lr_final.
        assert getattr(args, dest) == config, dest


#: flag -> config field, as the CLI meant it before the flags were generated (a reference: a flag
#: wired to the wrong field of the right type would pass every other test here).
FIELDS = {
    "reconstruct": {
        "--iters": "n_iters", "--batch-rays": "batch_rays", "--n-samples": "n_samples", "--n-importance": "n_importance",
        "--occupancy-resolution": "occupancy_resolution", "--occupancy-update-every": "occupancy_update_every",
        "--occupancy-threshold": "occupancy_threshold", "--grid-supersample": "grid_supersample", "--lr": "lr",
        "--tv": "tv_weight", "--log2-table-size": "field.encoding.log2_table_size",
        "--hash-levels": "field.encoding.n_levels", "--hash-base-resolution": "field.encoding.base_resolution",
        "--hash-finest-resolution": "field.encoding.finest_resolution",
        "--hash-implementation": "field.encoding.implementation", "--field-implementation": "field.implementation",
        "--precision": "field.compute_dtype", "--seed": "seed",
    },
    "register": {"--levels": "levels", "--iterations": "iterations", "--lr": "lr", "--loss": "loss", "--step": "step",
                 "--intensity": "intensity", "--multi-levels": "multi_start_levels", "--projector": "projector"},
    "interpolate": {"--iters": "inr_config:n_iters", "--batch": "inr_config:batch", "--inr-base": "inr_config:base",
                    "--smoothness": "inr_config:smoothness", "--seed": "inr_config:seed",
                    "--smore-iters": "smore_config:n_iters"},
}


@pytest.mark.parametrize("cmd", sorted(MINIMAL))
def test_flags_set_the_fields_they_always_set(cmd):
    _, specs = _parse(MINIMAL[cmd])
    got = {f.flag: f"{dest}:{f.path}" if len(specs) > 1 else f.path for dest, spec in specs.items() for f in spec.flags}
    assert got == FIELDS[cmd]


def _other_value(flag: Flag, action, default):
    """A valid command-line value for ``flag`` other than its ``default``."""
    if action.choices:
        return [next(str(c) for c in action.choices if c != default)]
    if action.nargs == "+":
        return [str(v) for v in default[1:]]
    if action.type is int:
        return [str(7 if default is None else default + 1)]
    if action.type is float:
        return [str(0.5 if not default else default / 2)]
    return []  # store_true


@pytest.mark.parametrize("cmd", sorted(MINIMAL))
def test_each_flag_sets_its_own_field_only(cmd):
    _, specs = _parse(MINIMAL[cmd])
    actions = {o: a for a in _sub(cmd)._actions for o in a.option_strings}
    checked = 0
    for dest, spec in specs.items():
        for flag in spec.flags:
            action = actions[flag.flag]
            argv = [*MINIMAL[cmd], flag.flag, *_other_value(flag, action, action.default)]
            args = build_configs(_parser(argv).parse_args(argv))
            got, default = getattr(args, dest), spec.config
            assert got != default, flag.flag
            # walking the path: the field changed, and setting it back restores the default config
            *parents, leaf = flag.path.split(".")
            owner = got
            for name in parents:
                owner = getattr(owner, name)
            assert getattr(owner, leaf) == flag.to_config(getattr(args, flag.dest)), flag.flag
            restored = _set(got, flag.path, _get(default, flag.path))
            if dest == "naf_config" and flag.flag == "--lr":
                restored = dataclasses.replace(restored, lr_final=default.lr_final)
            assert restored == default, flag.flag
            checked += 1
    assert checked >= {"reconstruct": 18, "register": 7, "interpolate": 6}[cmd]


def _get(config, path):
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _set(config, path, value):
    head, _, rest = path.partition(".")
    return dataclasses.replace(config, **{head: _set(getattr(config, head), rest, value) if rest else value})


@pytest.mark.parametrize("argv, flags, words", [
    (["--log2-table-size", "40"], ["--log2-table-size"], ["HashGridConfig.log2_table_size"]),
    (["--log2-table-size", "0"], ["--log2-table-size"], ["[1, 30]"]),
    (["--hash-levels", "16", "--log2-table-size", "28"], ["--log2-table-size", "--hash-levels"], ["int32"]),
    (["--occupancy-threshold", "1.5"], ["--occupancy-threshold"], ["[0, 1)"]),
    (["--iters", "0"], ["--iters"], ["n_iters"]),
    (["--lr", "nan"], ["--lr"], ["NAFConfig.lr"]),
])
def test_reconstruct_value_the_config_refuses_exits_2_naming_the_flag(capsys, argv, flags, words):
    assert main([*MINIMAL["reconstruct"], *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxmedrf reconstruct") and "jaxmedrf reconstruct: error: argument " in err
    for w in flags + words:
        assert w in err, err
    assert "in.npz" not in err and "Traceback" not in err  # refused before any input is read


@pytest.mark.parametrize("cmd, argv, flag", [
    ("register", ["--multi-levels", "4"], "--multi-levels"),
    ("register", ["--levels", "2", "0"], "--levels"),
    ("register", ["--iterations", "0"], "--iterations"),
    ("interpolate", ["--batch", "0"], "--batch"),
    ("interpolate", ["--smoothness", "-1"], "--smoothness"),
    ("interpolate", ["--smore-iters", "0"], "--smore-iters"),
])
def test_other_commands_value_the_config_refuses_exits_2_naming_the_flag(capsys, cmd, argv, flag):
    assert main([*MINIMAL[cmd], *argv]) == 2
    err = capsys.readouterr().err
    assert f"jaxmedrf {cmd}: error: argument {flag}: " in err, err


def test_table_size_range_is_the_configs():
    """The CLI used to allow 10..24 on its own; HashGridConfig's range is the only one now."""
    args = build_configs(_parser(MINIMAL["reconstruct"]).parse_args([*MINIMAL["reconstruct"], "--log2-table-size", "8"]))
    assert args.naf_config.field.encoding.log2_table_size == 8


@pytest.mark.parametrize("cmd, argv", [
    ("reconstruct", ["--method", "magic"]),
    ("reconstruct", ["--hash-implementation", "cuda"]),
    ("reconstruct", ["--precision", "bfloat16"]),
    ("register", ["--loss", "l1"]),
    ("interpolate", ["--method", "magic"]),
    ("interpolate", ["--inr-base", "cubic"]),
])
def test_bad_choice_exits_2(capsys, cmd, argv):
    with pytest.raises(SystemExit) as e:
        main([*MINIMAL[cmd], *argv])
    assert e.value.code == 2
    assert f"argument {argv[0]}: invalid choice" in capsys.readouterr().err


def test_choices_come_from_the_library():
    from jaxmedrf.mri.inr import BASES
    from jaxmedrf.mri.interpolate import METHODS as MRI_METHODS
    from jaxmedrf.recon import METHODS
    from jaxmedrf.registration import LOSSES

    def choices(cmd, flag):
        return next(a for a in _sub(cmd)._actions if flag in a.option_strings).choices

    assert set(choices("reconstruct", "--method")) == {"naf", *METHODS}
    assert set(choices("register", "--loss")) == set(LOSSES)
    assert set(choices("interpolate", "--method")) == set(MRI_METHODS)
    assert set(choices("interpolate", "--inr-base")) == set(BASES)


def test_intentional_cli_defaults():
    """The CLI defaults that differ from the library's, each with its comment in the CLI module."""
    from jaxmedrf.cli._config_args import param_default
    from jaxmedrf.mri.interpolate import interpolate
    from jaxmedrf.recon.naf import train_naf

    rec = _parser(MINIMAL["reconstruct"]).parse_args(MINIMAL["reconstruct"])
    assert rec.checkpoint_every == 500 and param_default(train_naf, "checkpoint_every") == 0  # 0 = none
    mri = _parser(MINIMAL["interpolate"]).parse_args(MINIMAL["interpolate"])
    assert mri.method == "inr" and param_default(interpolate, "method") == "cubic"


def test_reconstruct_help_lists_every_flag_with_the_configs_default():
    res = subprocess.run([sys.executable, "-m", "jaxmedrf.cli", "reconstruct", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    for flag, default in [("--log2-table-size", "19"), ("--hash-finest-resolution", "512"), ("--batch-rays", "8192"),
                          ("--hash-implementation", "auto"), ("--precision", "float32"), ("--lr", "0.01")]:
        assert flag in out and f"(default: {default})" in out.split(flag, 2)[-1].split(" --", 1)[0], flag


def test_config_error_from_the_command_line_exits_2():
    res = subprocess.run([sys.executable, "-m", "jaxmedrf.cli", *MINIMAL["reconstruct"], "--log2-table-size", "40"],
                         capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
    assert res.returncode == 2 and "argument --log2-table-size:" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------ the helper on its own (no JAX)


@dataclasses.dataclass(frozen=True)
class Inner:
    mode: Literal["a", "b"] = "a"
    size: int = 4

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"Inner.size must be >= 1, got {self.size}")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner(size=8)  # a nested default that differs from Inner()'s
    steps: int | None = None
    levels: tuple[int, ...] = (4, 2)
    fast: bool = False
    off: int | None = None

    def __post_init__(self):
        if self.off is not None and self.off < 1:
            raise ValueError(f"off must be None or >= 1, got {self.off}")


def _toy(argv):
    import argparse

    p = argparse.ArgumentParser(prog="toy")
    spec = ConfigArgs("config", Outer(), [
        Flag("inner.mode", "--mode", "mode"), Flag("inner.size", "--size", "size"), Flag("steps", "--steps", "steps"),
        Flag("levels", "--levels", "levels"), Flag("fast", "--fast", "fast"), Flag("off", "--off", "off", none_as=0),
    ])
    spec.add_to(p)
    return p, build_configs(p.parse_args(argv))


def test_helper_reads_defaults_types_and_literal_choices():
    p, args = _toy([])
    assert args.config == Outer()
    acts = {a.dest: a for a in p._actions}
    assert acts["mode"].choices == ("a", "b") and acts["size"].default == 8 and acts["size"].type is int
    assert acts["steps"].type is int and acts["steps"].default is None
    assert acts["levels"].nargs == "+" and acts["levels"].default == [4, 2] and acts["off"].default == 0
    _, args = _toy(["--mode", "b", "--size", "3", "--steps", "5", "--levels", "8", "1", "--fast", "--off", "2"])
    assert args.config == Outer(inner=Inner("b", 3), steps=5, levels=(8, 1), fast=True, off=2)


def test_helper_names_the_flag_of_the_refused_field():
    with pytest.raises(ConfigArgumentError, match=r"^argument --size: Inner\.size must be >= 1"):
        _toy(["--size", "0"])
    with pytest.raises(ConfigArgumentError, match=r"^argument --off: off must be"):
        _toy(["--off", "-1"])
    with pytest.raises(AttributeError, match="no field"):
        ConfigArgs("c", Outer(), [Flag("inner.sise", "--x", "typo")])
