"""chunked_map equals the unchunked computation, under jit, vmap and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf.chunking import chunked_map


@pytest.mark.parametrize("total, chunk, multiple_of", [(10, 3, 1), (10, 10, 1), (7, 100, 1), (10, 3, 4), (1, 1, 1)])
def test_equals_unchunked(total, chunk, multiple_of):
    x = jnp.arange(total, dtype=jnp.float32) * 0.5
    fn = lambda i: jnp.stack([x[i] ** 2, jnp.sin(x[i])], -1)  # noqa: E731
    got = chunked_map(fn, total, chunk, multiple_of=multiple_of)
    np.testing.assert_allclose(got, fn(jnp.arange(total)), rtol=1e-6)
    assert got.shape == (total, 2)


def test_jit_vmap_grad_and_remat():
    def f(scale, *, remat):
        return chunked_map(lambda i: scale * jnp.cos(i.astype(jnp.float32)), 9, 4, remat=remat)

    want = jnp.cos(jnp.arange(9.0))
    np.testing.assert_allclose(jax.jit(lambda s: f(s, remat=True))(2.0), 2.0 * want, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda s: f(s, remat=False))(jnp.array([1.0, 3.0])),
                               jnp.stack([want, 3.0 * want]), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda s: jnp.sum(f(s, remat=True)))(1.0), jnp.sum(want), rtol=1e-5)


def test_pytree_outputs_and_bad_sizes():
    a, b = chunked_map(lambda i: (i, 2 * i), 5, 2)
    np.testing.assert_array_equal(a, np.arange(5))
    np.testing.assert_array_equal(b, 2 * np.arange(5))
    with pytest.raises(ValueError, match="total"):
        chunked_map(lambda i: i, 0, 2)
    with pytest.raises(ValueError, match="chunk"):
        chunked_map(lambda i: i, 3, 0)
