"""LPIPS in JAX against the ``lpips`` package (PyTorch, CPU), and the restricted ``.pth`` reader.

The torch comparisons skip when torch or lpips is missing (neither is a declared dependency:
``pip install torch==2.13.0`` takes the local CPU wheel, then ``pip install --no-deps lpips``).
lpips imports torchvision only to build its trunks; where torchvision is absent a stub with
torchvision's ``features`` layout stands in (random trunks, ``pnet_rand=True``, need nothing more).
"""

import io
import os
import pickle
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmedrf import lpips as L
from jaxmedrf._pth import read_pth


# ------------------------------------------------------------------------------------ helpers
def _random_params(net, seed=0):
    r = np.random.default_rng(seed)
    convs = []
    for shape in L._expected_shapes(net):
        fan_in = int(np.prod(shape[1:]))
        convs.append((jnp.asarray(r.normal(size=shape) * np.sqrt(2 / fan_in), jnp.float32), jnp.asarray(r.normal(size=shape[0]) * 0.1, jnp.float32)))
    lins = tuple(jnp.asarray(r.uniform(0, 0.1, c), jnp.float32) for c in L._tap_channels(net))
    return L.LPIPSParams(tuple(convs), lins)


def _torchvision_stub(torch):
    """``torchvision.models.alexnet/vgg16`` with torchvision's ``features`` layout, random weights only."""
    nn = torch.nn

    def make(net):
        def build(pretrained=False, **kw):
            if pretrained:
                raise RuntimeError("stub torchvision has no pretrained weights")
            layers, c_in = [], 3
            for pool, convs in L._ARCH[net]:
                if pool is not None:
                    layers.append(nn.MaxPool2d(kernel_size=pool[0], stride=pool[1]))
                for c_out, k, s, p in convs:
                    layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=p), nn.ReLU(inplace=True)]
                    c_in = c_out
            return types.SimpleNamespace(features=nn.Sequential(*layers))

        return build

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.alexnet, tv.models.vgg16 = make("alex"), make("vgg")
    tv.models.squeezenet1_1 = make("alex")  # never used here
    return tv


@pytest.fixture(scope="module")
def torch_lpips():
    torch = pytest.importorskip("torch")
    with pytest.MonkeyPatch.context() as mp:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            tv = _torchvision_stub(torch)
            mp.setitem(sys.modules, "torchvision", tv)
            mp.setitem(sys.modules, "torchvision.models", tv.models)
        lpips = pytest.importorskip("lpips")
        yield torch, lpips


def _torch_model(torch, lpips, net):
    torch.manual_seed(0)
    return lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()


def _images(rng, n, size):
    return [rng.uniform(-1, 1, (n, 3, size, size)).astype(np.float32) for _ in range(2)]


# ------------------------------------------------------------- vs torch, recorded (runs in CI)
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_recorded_lpips_package(net):
    """Equals what the ``lpips`` package computed (``tests/make_lpips_reference.py`` recorded it
    with torch; the trunk is rebuilt here from the same NumPy seed), values and input gradient."""
    ref = np.load(os.path.join(os.path.dirname(__file__), "data", "lpips_reference.npz"))
    convs = _random_params(net, seed=7).convs
    assert float(np.sum(np.asarray(convs[0][0]))) == pytest.approx(float(ref[f"{net}_conv0_sum"]), rel=1e-6), "NumPy's stream changed: re-record"
    lins = tuple(jnp.asarray(ref[f"{net}_lin{l}"]) for l in range(len(L._tap_channels(net))))
    params = L.LPIPSParams(convs, lins)
    a, b = ref[f"{net}_a"], ref[f"{net}_b"]
    got = np.asarray(jax.jit(L.lpips)(a, b, params))
    np.testing.assert_allclose(got, ref[f"{net}_distance"], rtol=1e-4, atol=1e-6)
    if net == "alex":
        grad = np.asarray(jax.jit(jax.grad(lambda x: L.lpips(x, b, params).sum()))(a))
        want = ref["alex_grad_a"]
        scale = np.abs(want).max()
        np.testing.assert_allclose(grad / scale, want / scale, atol=1e-4)


# ------------------------------------------------------------------------------------ vs torch
@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 32)])
def test_matches_lpips_package(torch_lpips, tmp_path, rng, net, size):
    torch, lpips = torch_lpips
    model = _torch_model(torch, lpips, net)
    sd = model.net.state_dict()
    if net == "vgg":  # torchvision's own key layout ('features.<i>.*', plus a classifier)
        sd = {f"features.{k.split('.', 1)[1]}": v for k, v in sd.items()}
        sd["classifier.0.weight"] = torch.zeros(4, 2)
    torch.save(sd, tmp_path / "trunk.pth")
    params = L.load_lpips(tmp_path / "trunk.pth", net=net)
    a, b = _images(rng, 3, size)
    b[2] = a[2]  # one identical pair: distance 0
    with torch.no_grad():
        want = model(torch.from_numpy(a), torch.from_numpy(b)).numpy().reshape(-1)
    got = np.asarray(jax.jit(L.lpips)(a, b, params))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got[2] < 1e-10 and np.all(got[:2] > 1e-4)


def test_gradient_matches_torch(torch_lpips, tmp_path, rng):
    torch, lpips = torch_lpips
    model = _torch_model(torch, lpips, "alex")
    torch.save(model.net.state_dict(), tmp_path / "alex.pth")
    params = L.load_lpips(tmp_path / "alex.pth", net="alex")
    a, b = _images(rng, 2, 48)
    ta = torch.from_numpy(a).requires_grad_(True)
    model(ta, torch.from_numpy(b)).sum().backward()
    got = jax.jit(jax.grad(lambda x: L.lpips(x, b, params).sum()))(a)
    scale = np.abs(ta.grad.numpy()).max()
    np.testing.assert_allclose(np.asarray(got) / scale, ta.grad.numpy() / scale, atol=1e-4)


def test_lin_weights_equal_torch_load(torch_lpips):
    torch, _ = torch_lpips
    for net in ("alex", "vgg"):
        path = L.lpips_weights_path(net)
        want = torch.load(path, map_location="cpu", weights_only=True)
        got = read_pth(path)
        assert list(got) == list(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k].numpy())


# ------------------------------------------------------------------------------------ reader
@pytest.mark.parametrize("zip_format", [True, False])
def test_reader_round_trip_strided(torch_lpips, tmp_path, zip_format):
    torch, _ = torch_lpips
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {
        "t": base.t(),  # transposed strides
        "v": base[1:, ::3],  # offset + step
        "h": torch.linspace(-2, 2, 7, dtype=torch.float16),
        "bf": torch.linspace(-2, 2, 5, dtype=torch.bfloat16),
        "i": torch.arange(-3, 3, dtype=torch.int64).reshape(2, 3)[:, 1:],
        "u": torch.tensor([0, 255], dtype=torch.uint8),
        "b": torch.tensor([True, False]),
        "d": torch.randn(3, 4, dtype=torch.float64)[:, ::2],
        "p": torch.nn.Parameter(torch.ones(2, 2)),
        "e": torch.zeros(0, 3),
        "s": torch.tensor(3.5),
        "nested": {"list": [base[2], 4, "x"]},
    }
    path = tmp_path / "t.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    got = read_pth(path)
    for k in ("t", "v", "h", "i", "u", "b", "d", "p", "e", "s"):
        want = obj[k].detach().numpy()
        assert got[k].shape == want.shape and got[k].dtype == want.dtype, k
        np.testing.assert_array_equal(got[k], want)
    np.testing.assert_array_equal(got["bf"].astype(np.float32), obj["bf"].float().numpy())
    np.testing.assert_array_equal(got["nested"]["list"][0], base[2].numpy())
    assert got["nested"]["list"][1:] == [4, "x"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # would run a shell command if unpickled; it never is
        return os.system, (f"touch {self.marker}",)


def _zip_pth(path, pkl_bytes, members=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl_bytes)
        for name, data in members:
            z.writestr(name, data)


def test_reader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    zpath = tmp_path / "evil.pth"
    _zip_pth(zpath, pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to unpickle (posix|nt|os)\.system from .*evil\.pth"):
        read_pth(zpath)
    lpath = tmp_path / "evil_legacy.pth"
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump([_Evil(marker)], buf, protocol=2)
    lpath.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"refusing to unpickle (posix|nt|os)\.system"):
        read_pth(lpath)
    gpath = tmp_path / "builtin.pth"
    _zip_pth(gpath, pickle.dumps(getattr, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to unpickle (__builtin__|builtins)\.getattr"):
        read_pth(gpath)
    assert not marker.exists()


def test_reader_bad_files(torch_lpips, tmp_path):
    torch, _ = torch_lpips
    with pytest.raises(FileNotFoundError):
        read_pth(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        read_pth(tmp_path / "junk.pth")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(4, 4)}, good)
    with zipfile.ZipFile(good) as z:  # truncate the storage: the reader must not read past it
        members = [(n, z.read(n)[:8] if "/data/" in n else z.read(n)) for n in z.namelist()]
    bad = tmp_path / "short.pth"
    with zipfile.ZipFile(bad, "w") as z:
        for n, d in members:
            z.writestr(n, d)
    with pytest.raises(ValueError, match="holds 8 bytes, needs 64"):
        read_pth(bad)


# ------------------------------------------------------------------------------------ loading
def test_load_errors(torch_lpips, tmp_path):
    torch, lpips = torch_lpips
    torch.save(_torch_model(torch, lpips, "alex").net.state_dict(), tmp_path / "alex.pth")
    with pytest.raises(ValueError, match=r"feature layer 0 has weight \(64, 3, 11, 11\).*vgg needs \(64, 3, 3, 3\)"):
        L.load_lpips(tmp_path / "alex.pth", net="vgg")
    with pytest.raises(ValueError, match="net must be one of"):
        L.load_lpips(tmp_path / "alex.pth", net="squeeze")
    with pytest.raises(FileNotFoundError):
        L.load_lpips(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"lin0.model.1.weight must have shape \(1, 64, 1, 1\)"):
        L.load_lpips(tmp_path / "alex.pth", net="alex", lin=tmp_path / "alex.pth")


def test_bad_inputs(unchecked):
    p = _random_params("alex")
    a = jnp.zeros((1, 3, 40, 40))
    with pytest.raises(ValueError, match="differs from reference shape"):
        L.lpips(a, a[..., :39], p)
    with pytest.raises(ValueError, match=r"expected \(\*batch, 3, H, W\)"):
        L.lpips(a[:, :1], a[:, :1], p)
    with pytest.raises(ValueError, match="at least 31"):
        L.lpips(a[..., :30, :30], a[..., :30, :30], p)
    with pytest.raises(ValueError, match="high must exceed low"):
        L.to_lpips_input(jnp.zeros((4, 4)), low=1.0, high=1.0)


# ------------------------------------------------------------------------------------ transforms
def test_jit_vmap_and_slices(rng):
    p = _random_params("alex", seed=1)
    a, b = _images(rng, 4, 36)
    eager = L.lpips(a, b, p)
    np.testing.assert_allclose(jax.jit(L.lpips)(a, b, p), eager, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.vmap(L.lpips, in_axes=(0, 0, None)))(a, b, p), eager, rtol=1e-5)
    np.testing.assert_allclose(L.lpips(b, a, p), eager, rtol=1e-5)  # symmetric
    assert np.all(np.asarray(eager) > 0)

    vol = rng.uniform(0, 0.03, (36, 36, 4)).astype(np.float32)
    ref = rng.uniform(0, 0.03, (36, 36, 4)).astype(np.float32)
    per = L.lpips_slices(vol, ref, p, batch_size=2)
    lo, hi = ref.min(), ref.max()
    slices = [L.to_lpips_input(np.moveaxis(v, 2, 0), low=lo, high=hi) for v in (vol, ref)]
    np.testing.assert_allclose(per, L.lpips(*slices, p), rtol=1e-5)  # same shapes as above: no new compile
    x = L.to_lpips_input(jnp.asarray([[0.0, 0.5, 2.0]]), low=0.0, high=1.0)
    assert x.shape == (3, 1, 3) if x.ndim == 3 else x.shape == (1, 3, 1, 3)
    np.testing.assert_allclose(x[..., 0, :, :], [[-1.0, 0.0, 1.0]])


def test_grad_finite_at_identical_images():
    p = _random_params("alex", seed=2)
    a = jnp.zeros((1, 3, 31, 31))  # zero features at many pixels: the unit normalisation must not give NaN
    g = jax.jit(jax.grad(lambda x: L.lpips(x, a, p).sum()))(a)
    assert np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------------------------ CLI
def test_cli_evaluate_lpips(torch_lpips, tmp_path, rng, capsys):
    import json

    from jaxmedrf import cli

    torch, lpips = torch_lpips
    torch.save(_torch_model(torch, lpips, "alex").net.state_dict(), tmp_path / "alex.pth")
    ref = np.zeros((32, 32, 32), np.float32)
    ref[8:24, 6:26, 4:28] = 0.02
    vol = ref + 0.002 * rng.standard_normal(ref.shape).astype(np.float32)
    np.savez(tmp_path / "ref.npz", volume=ref)
    np.savez(tmp_path / "rec.npz", volume=vol)
    common = ["evaluate", str(tmp_path / "rec.npz"), "--reference", str(tmp_path / "ref.npz"), "--no-reprojection"]

    assert cli.main([*common, "--out-json", str(tmp_path / "none.json")]) == 0
    assert "LPIPS: unavailable (no backbone weights: pass --lpips-backbone FILE)" in capsys.readouterr().out
    doc = json.loads((tmp_path / "none.json").read_text())
    assert doc["lpips"].startswith("unavailable") and "lpips" not in doc["results"]["rec"]

    assert cli.main([*common, "--lpips-backbone", str(tmp_path / "alex.pth"), "--out-json", str(tmp_path / "m.json")]) == 0
    assert "lpips" in capsys.readouterr().out.splitlines()[0]
    res = json.loads((tmp_path / "m.json").read_text())["results"]["rec"]
    params = L.load_lpips(tmp_path / "alex.pth")
    want = [
        float(L.lpips(*(L.to_lpips_input(np.take(v, 16, axis=ax), low=0.0, high=0.02) for v in (vol, ref)), params))
        for ax in range(3)
    ]
    np.testing.assert_allclose(res["lpips_central_xyz"], want, rtol=1e-4)
    np.testing.assert_allclose(res["lpips"], np.mean(want), rtol=1e-4)

    assert cli.main([*common, "--lpips-backbone", str(tmp_path / "missing.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
