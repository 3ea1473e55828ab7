"""The geometry contract: field validation, the TIGRE convention, pytree behaviour."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmedrf as jm


def small_cone(**kw):
    base = dict(n_voxel=(8, 9, 10), d_voxel=(1.0, 1.5, 2.0), n_detector=(12, 14), d_detector=(1.2, 1.3),
                DSD=300.0, DSO=200.0, n_views=5, off_detector=(0.7, -1.1), off_origin=(1.0, -2.0, 0.5))
    base.update(kw)
    return jm.cone_beam(**base)


class ConventionTest(chex.TestCase):
    """The convention's formulas, with the geometry an argument: jitted (a traced geometry) and not."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_frames_follow_the_documented_formulas(self):
        g = small_cone()
        th = np.asarray(g.angles)
        radial, zero = np.stack([np.cos(th), np.sin(th), 0 * th], -1), 0 * th
        want = jm.Frames(source=200 * radial, center=-100 * radial, u=np.stack([-np.sin(th), np.cos(th), zero], -1),
                         v=np.stack([zero, zero, zero + 1], -1), direction=-radial)
        f = self.variant(jm.view_frames)(g)
        chex.assert_trees_all_close((f.source, f.center), (want.source, want.center), atol=1e-4)  # mm
        chex.assert_trees_all_close((f.u, f.v, f.direction), (want.u, want.v, want.direction), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pixel_centres_and_voxel_centres(self):
        g = small_cone()
        rays = self.variant(jm.pixel_rays)(g, jnp.array(2), jnp.array(3), jnp.array(11))
        th = g.angles[2]
        D = np.array([-100 * np.cos(th), -100 * np.sin(th), 0])
        u = np.array([-np.sin(th), np.cos(th), 0])
        v = np.array([0, 0, 1.0])
        S = np.array([200 * np.cos(th), 200 * np.sin(th), 0])
        pixel = D + u * ((11 - 6.5) * 1.3 - 1.1) + v * ((3 - 5.5) * 1.2 + 0.7)
        chex.assert_trees_all_close(rays, jm.Rays(S, pixel - S), atol=1e-4)
        centres = self.variant(jm.voxel_centers)(g)
        want = tuple((np.arange(n) - (n - 1) / 2) * d + o for n, d, o in zip(g.n_voxel, (1.0, 1.5, 2.0), (1.0, -2.0, 0.5)))
        chex.assert_trees_all_close(centres, want, atol=1e-6)
        box = self.variant(jm.volume_box)(g)
        chex.assert_trees_all_close(box, (np.array([-4 + 1, -6.75 - 2, -10 + 0.5]), np.array([4 + 1, 6.75 - 2, 10 + 0.5])), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pose_moves_the_rig(self):
        g = small_cone(n_views=2)
        rot = np.stack([np.eye(3), np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])])
        t = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -5.0]])
        turn = lambda x: np.einsum("vij,vj->vi", rot, np.asarray(x))  # noqa: E731
        f0 = jm.view_frames(g)
        want = jm.Frames(turn(f0.source) + t, turn(f0.center) + t, turn(f0.u), turn(f0.v), turn(f0.direction))
        chex.assert_trees_all_close(self.variant(jm.view_frames)(g.replace(rotation=rot, translation=t)), want, atol=1e-4)


def test_pytree_roundtrip_jit_and_json():
    g = small_cone()
    leaves, tree = jax.tree_util.tree_flatten(g)
    assert len(leaves) == 7  # rotation/translation are None
    chex.assert_trees_all_equal(jax.tree_util.tree_unflatten(tree, leaves), g)  # the static fields too
    chex.assert_trees_all_close(jax.jit(lambda geo: geo)(g), g, rtol=1e-6)  # through jit: float32 leaves
    g3 = jm.Geometry.from_json(g.to_json())
    assert json.loads(g3.to_json()) == json.loads(g.to_json())
    assert set(json.loads(g.to_json())) == {"beam", "n_detector", "n_voxel", "DSD", "DSO", "d_detector",
                                            "off_detector", "d_voxel", "off_origin", "angles"}


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(DSD=150.0), "DSD"),
        (dict(DSO=-1.0, DSD=10.0), "DSO"),
        (dict(d_voxel=(1.0, 0.0, 1.0)), "d_voxel"),
        (dict(d_detector=-1.0), "d_detector"),
        (dict(n_voxel=(8, 0, 8)), "n_voxel"),
        (dict(n_detector=(8, 2.5)), "n_detector"),
        (dict(DSD=float("nan")), "DSD"),
        (dict(off_origin=(0.0, float("inf"), 0.0)), "off_origin"),
        (dict(off_detector=(1.0,)), "off_detector"),
    ],
)
def test_bad_geometry_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        small_cone(**kw)


def test_bad_angles_and_volume():
    with pytest.raises(ValueError, match="angles"):
        small_cone(angles=[0.0, float("nan")])
    with pytest.raises(ValueError, match="n_views"):
        jm.circular_angles(0)
    g = small_cone()
    with pytest.raises(ValueError, match=r"n_voxel is \(8, 9, 10\)"):
        jm.project(jnp.zeros((8, 9, 11)), g)
    with pytest.raises(ValueError, match="method"):
        jm.project(jnp.zeros((8, 9, 10)), g, method="nope")
    with pytest.raises(ValueError, match="beam"):
        jm.Geometry(DSD=1, DSO=0.5, n_detector=(2, 2), d_detector=1, n_voxel=(2, 2, 2), d_voxel=1,
                    angles=[0.0], beam="fan")


def test_parallel_geometry_ignores_distances():
    g = jm.parallel_beam(n_voxel=(4, 4, 4), d_voxel=1.0, n_detector=(4, 4), d_detector=1.0, n_views=3)
    assert g.beam == "parallel" and g.projection_shape == (3, 4, 4)
    assert math.isclose(float(g.angles[1]), math.pi / 3)
