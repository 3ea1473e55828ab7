"""Test set-up: JAX on the CPU with 8 forced devices (set before JAX is imported)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A NumPy generator with a fresh seed per test (printed on failure); set
    JAXMEDRF_TEST_SEED to rerun a failure with the seed it printed."""
    seed = int(os.environ.get("JAXMEDRF_TEST_SEED") or np.random.SeedSequence().entropy % (2**32))
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


@pytest.fixture
def x64():
    """Runs the test with 64-bit floats enabled."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)
