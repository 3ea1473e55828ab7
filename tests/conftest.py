"""Test set-up: JAX on the CPU with 8 forced devices (set before JAX is imported), one
persistent compilation cache per pytest run, shared by the xdist workers and the CLI
subprocesses (many tests compile the same programs: the same NAF step, the same projector),
and XLA's CPU backend at optimisation level 1 instead of 2: the tests run small programs, much of
whose time is LLVM's compilation; level 1 ran the heaviest tests as fast as level 2 or faster (an
FDK test 19.7 s against 24.5 s), and level 0 compiled faster still but ran the compute-bound tests
2–3× slower (a NAF training test 110 s against 42 s). The programs compute the same
functions (``XLA_FLAGS=--xla_backend_optimization_level=2`` before pytest runs them as users do)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = flags = (flags + " --xla_force_host_platform_device_count=8").strip()
if "xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=1").strip()
os.environ.setdefault("MPLBACKEND", "Agg")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the pytest process; its workers inherit the folder
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxmedrf-test-jit-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


DEFAULT_SEED = 20261203


@pytest.fixture
def rng():
    """A NumPy generator, seeded with ``DEFAULT_SEED`` so that CI is deterministic. Set
    ``JAXMEDRF_TEST_SEED=random`` to explore a fresh seed per test (printed on failure), or
    ``JAXMEDRF_TEST_SEED=<n>`` to rerun one."""
    env = os.environ.get("JAXMEDRF_TEST_SEED", "")
    seed = (int(np.random.SeedSequence().entropy % (2**32)) if env == "random" else int(env) if env else DEFAULT_SEED)
    print(f"numpy seed {seed}")
    return np.random.default_rng(seed)


@pytest.fixture
def unchecked():
    """Switches jaxtyping's run-time check (``--jaxtyping-packages``) off for one test: for a test
    of the library's own error on a badly typed or shaped argument, which the check would raise
    first as a ``TypeCheckError``."""
    import jaxtyping

    prev = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", prev)


@pytest.fixture
def x64():
    """Runs the test with 64-bit floats enabled."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


#: The modules with the longest tests (a local ``--durations`` run), collected first: under
#: ``-n 2 --dist worksteal`` each worker starts on a contiguous half of the tests and an idle one
#: steals from the end of the other's queue, so long tests at the front leave short ones for the end
#: and neither worker waits on a long test alone. The order within a module is kept.
LONG_FIRST = ("test_notebooks.py", "test_naf_real.py", "test_benchmark_ct_protocol.py", "test_lineformer.py",
              "test_kernels_field.py", "test_registration.py", "test_cli_reconstruct.py", "test_naf.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
