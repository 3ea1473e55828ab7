"""The public surface: every name in __all__ exists; options are keyword-only, `key` first."""

import inspect

import jaxmedrf


def test_all_names_exist():
    for name in jaxmedrf.__all__:
        assert hasattr(jaxmedrf, name), name


def test_public_functions_take_options_keyword_only_and_key_first():
    checked = 0
    for name in jaxmedrf.__all__:
        fn = getattr(jaxmedrf, name)
        if not inspect.isfunction(fn):
            continue
        params = list(inspect.signature(fn).parameters.values())
        assert all(p.name != "rng" for p in params), name
        if any(p.name == "key" for p in params):
            assert params[0].name == "key", name
        positional_defaults = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty]
        # Allowed positional defaults: a config object passed as the third argument.
        assert all(p.name in ("config",) for p in positional_defaults), (name, [p.name for p in positional_defaults])
        checked += 1
    assert checked > 15


def test_import_and_cli_help_load_no_jax():
    """The package namespaces are lazy: importing them and building the top-level parser (what
    ``jaxmedrf --help`` does: every subcommand's name and one-line help) imports no JAX."""
    import subprocess
    import sys

    code = ("import sys, jaxmedrf, jaxmedrf.io, jaxmedrf.kernels\n"
            "from jaxmedrf.cli import _parser\n"
            "_parser()\n"
            "print(sorted(m for m in sys.modules if m == 'jax' or m.startswith('jax.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:500]
    # and the names still resolve on use
    assert jaxmedrf.io.UNITS == ("HU", "mu") and jaxmedrf.kernels.HashGridTuning is not None


def test_the_test_run_checks_annotations_under_jit(request):
    """pyproject's pytest options install jaxtyping's import hook (beartype): a call checks the
    shapes and named dimensions of its signature, under ``jit`` at trace time. Without it these
    two translations would broadcast silently."""
    import jax
    import jax.numpy as jnp
    import jaxtyping
    import pytest

    if not request.config.getoption("jaxtyping_packages"):
        pytest.skip("started with --jaxtyping-packages= : no run-time check")
    distance = jax.jit(jaxmedrf.pose.translation_distance)
    assert distance(jnp.zeros((4, 3)), jnp.ones((4, 3))).shape == (4,)
    with pytest.raises(jaxtyping.TypeCheckError, match="batch"):
        distance(jnp.zeros((4, 3)), jnp.ones((1, 3)))
