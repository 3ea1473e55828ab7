"""Records what the ``lpips`` package (PyTorch) computes, for the CI test that has no torch.

Run where torch and lpips are installed (``pip install torch lpips``; torchvision is
stubbed when absent, as in ``test_lpips.py``)::

    python tests/make_lpips_reference.py        # writes tests/data/lpips_reference.npz

The trunk weights are drawn with NumPy from a fixed seed (:func:`test_lpips._random_params`),
so the test rebuilds them without torch; the file keeps the images, the lpips package's
calibrated linear layers, and the package's distances and input gradient.
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SEED = 7
SIZES = {"alex": 64, "vgg": 32}


def main() -> None:
    import torch

    import test_lpips as T
    from jaxmedrf import lpips as L
    from jaxmedrf._pth import read_pth

    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = T._torchvision_stub(torch)
        sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models
    import lpips

    out = {"torch_version": np.asarray(torch.__version__), "lpips_version": np.asarray(getattr(lpips, "__version__", "?"))}
    rng = np.random.default_rng(SEED)
    for net, size in SIZES.items():
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
        convs = T._random_params(net, seed=SEED).convs
        slices = [m for s in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5) for m in s if isinstance(m, torch.nn.Conv2d)]
        assert len(slices) == len(convs)
        with torch.no_grad():
            for conv, (w, b) in zip(slices, convs):
                conv.weight.copy_(torch.from_numpy(np.asarray(w)))
                conv.bias.copy_(torch.from_numpy(np.asarray(b)))
        a = rng.uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
        b = rng.uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
        b[2] = np.clip(a[2] + 0.05 * rng.standard_normal(a[2].shape), -1, 1).astype(np.float32)  # a close pair
        ta = torch.from_numpy(a).requires_grad_(True)
        d = model(ta, torch.from_numpy(b))
        d.sum().backward()
        lin = read_pth(L.lpips_weights_path(net))
        out.update({
            f"{net}_a": a, f"{net}_b": b,
            f"{net}_distance": d.detach().numpy().reshape(-1),
            f"{net}_grad_a": ta.grad.numpy(),
            f"{net}_conv0_sum": np.asarray(float(np.sum(np.asarray(convs[0][0])))),
        })
        for l, c in enumerate(L._tap_channels(net)):
            out[f"{net}_lin{l}"] = np.asarray(lin[f"lin{l}.model.1.weight"]).reshape(c)
    np.savez_compressed(HERE / "data" / "lpips_reference.npz", **out)
    print("wrote", HERE / "data" / "lpips_reference.npz", {k: v for k, v in out.items() if k.endswith("distance")})


if __name__ == "__main__":
    main()
