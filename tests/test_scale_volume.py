"""Volume-sharded (z-slab) projection, backprojection, FDK, SART and CGLS on 8 CPU devices
equal the single-device results; a z size that does not divide over the devices is padded."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm
from jaxmedrf.parallel import make_mesh, volume_sharding
from jaxmedrf.recon.fdk import fdk
from jaxmedrf.recon.iterative import cgls, sart
from jaxmedrf.sharded_projection import backproject_sharded, project_sharded

# float32 tolerances (relative to the largest value): the slabs change only the summation order.
RTOL = 1e-5


def geom(nz=16, views=6):
    return jm.cone_beam(n_voxel=(16, 16, nz), d_voxel=8.0, n_detector=(20, 20), d_detector=16.0, n_views=views)


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b)), (np.max(np.abs(a - b)), np.max(np.abs(b)))


@pytest.mark.parametrize("nz", [16, 13])  # 13: padded to 16 planes over 8 devices
def test_project_and_backproject_volume_sharded_equal_single_device(rng, nz):
    g = geom(nz)
    mesh = make_mesh()
    vol = jnp.asarray(rng.random(g.n_voxel), jnp.float32)
    y = jnp.asarray(rng.random(g.projection_shape), jnp.float32)
    ax = project_sharded(vol, g, mesh=mesh, chunk_size=1024)
    close(ax, jm.project(vol, g))
    bp = backproject_sharded(y, g, mesh=mesh, chunk_size=1024)
    close(bp, jm.backproject(y, g))
    if nz % 8 == 0:
        assert bp.sharding.spec == volume_sharding(mesh).spec
    # adjoint identity of the sharded pair (the pair above: one chunk size, no third program)
    lhs = float(jnp.vdot(ax, y))
    rhs = float(jnp.vdot(vol, bp))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


def test_rays_mode_and_bad_input(unchecked):
    g = geom()
    mesh = make_mesh()
    vol = jnp.ones(g.n_voxel)
    close(project_sharded(vol, g, mesh=mesh, shard="rays"), jm.project(vol, g))
    with pytest.raises(ValueError, match="shard must be one of"):
        project_sharded(vol, g, mesh=mesh, shard="views")
    with pytest.raises(ValueError, match="supports method=.siddon. only"):
        project_sharded(vol, g, mesh=mesh, method="trilinear")
    with pytest.raises(ValueError, match="mesh must be"):
        project_sharded(vol, g, mesh=None)


@pytest.mark.parametrize("nz", [16, 12])
def test_fdk_volume_sharded_equals_single_device(nz):
    g = geom(nz, views=24)
    vol = jm.voxelize(jm.shepp_logan(radius=60.0), g)
    proj = jm.project(vol, g)
    close(fdk(proj, g, mesh=make_mesh()).volume, fdk(proj, g).volume)


def test_sart_and_cgls_volume_sharded_equal_single_device():
    # 4 views: subsets of 2 leave voxels unseen, so V's floor (a global max over the slabs) acts
    # too. (8 views ran as well: the same programs, with the floor inactive; 4 covers that code.)
    g = geom(views=4)
    vol = jm.voxelize(jm.shepp_logan(radius=60.0), g)
    proj = jm.project(vol, g)
    mesh = make_mesh()
    kw = dict(n_iters=1, progress=False, method="siddon")  # the slab pair is Siddon's ("auto" on one CPU: Joseph's)
    a = sart(proj, g, n_subsets=2, mesh=mesh, **kw)
    b = sart(proj, g, n_subsets=2, **kw)
    close(a.volume, b.volume, 1e-4)  # 2 subset updates: rounding compounds a little
    np.testing.assert_allclose(a.history["residual"], b.history["residual"], rtol=1e-4)
    c = cgls(proj, g, mesh=mesh, **kw)
    d = cgls(proj, g, **kw)
    close(c.volume, d.volume, 1e-4)
    np.testing.assert_allclose(c.history["residual"], d.history["residual"], rtol=1e-4)
