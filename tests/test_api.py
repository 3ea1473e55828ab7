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
