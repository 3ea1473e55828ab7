"""torch-ngp's fused CUDA hash encoder, as shipped in NAF's repository (the benchmark peer).

Source: https://github.com/Ruyi-Zha/naf_cbct (commit cff7da31a6f80e788ce0831b0fae6b4b4dae4cec),
``src/encoder/hashencoder/src/{hashencoder.cu,hashencoder.h,bindings.cpp}``, MIT License,
Copyright (c) 2022 Ruyi Zha (see ``LICENSE`` here; the kernel descends from torch-ngp by
Jiaxiang Tang, also MIT). One change: the two ``AT_DISPATCH_FLOATING_TYPES_AND_HALF``
dispatch arguments ``inputs.type()`` / ``grad.type()`` became ``.scalar_type()`` (the
former no longer compiles with current PyTorch).

The autograd wrapper below mirrors ``src/encoder/hashencoder/hashgrid.py`` of that
repository (same kernel calls, same ``(L, B, C)`` output permuted to ``(B, L·C)``), without
its ``torch.cuda.amp`` decorators. Resolutions are ``base · 2^l`` (per-level scale 2),
positions are offset by half a cell and dense levels hold ``min(T, (N+1)^3)`` rows, so its
features differ from jaxmedrf's; only its speed is compared.

Nothing is built at import; :func:`load` compiles the extension with
``torch.utils.cpp_extension.load`` (needs nvcc and a GPU).
"""

from __future__ import annotations

import os
from pathlib import Path

_SRC = Path(__file__).resolve().parent / "src"


def load(build_dir: str | os.PathLike | None = None, verbose: bool = False):
    """Compiles and returns the extension module (``hash_encode_forward`` / ``_backward``)."""
    from torch.utils.cpp_extension import load as _load

    kwargs = {}
    if build_dir is not None:
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        kwargs["build_directory"] = str(build_dir)
    return _load(
        name="_naf_hash_encoder",
        sources=[str(_SRC / "hashencoder.cu"), str(_SRC / "bindings.cpp")],
        extra_cflags=["-O3"],
        extra_cuda_cflags=[
            "-O3",
            "-U__CUDA_NO_HALF_OPERATORS__",
            "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_HALF2_OPERATORS__",
        ],
        verbose=verbose,
        **kwargs,
    )


def make_encoder(backend, *, n_levels: int, level_dim: int, base_resolution: int, log2_hashmap_size: int, device):
    """``(encode, embeddings, offsets)``: ``encode(x)`` is torch-ngp's differentiable encoding."""
    import numpy as np
    import torch

    offsets, offset = [], 0
    for level in range(n_levels):
        resolution = base_resolution * 2**level
        offsets.append(offset)
        offset += min(2**log2_hashmap_size, (resolution + 1) ** 3)
    offsets.append(offset)
    offsets_t = torch.from_numpy(np.array(offsets, dtype=np.int32)).to(device)

    class _HashEncode(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, embeddings):
            inputs, embeddings = inputs.contiguous(), embeddings.contiguous()
            B, D = inputs.shape
            C = embeddings.shape[1]
            outputs = torch.zeros(n_levels, B, C, device=inputs.device, dtype=inputs.dtype)
            dy_dx = torch.zeros(1, device=inputs.device, dtype=inputs.dtype)
            backend.hash_encode_forward(
                inputs, embeddings, offsets_t, outputs, B, D, C, n_levels, base_resolution, False, dy_dx
            )
            ctx.save_for_backward(inputs, embeddings, dy_dx)
            ctx.dims = (B, D, C)
            return outputs.permute(1, 0, 2).reshape(B, n_levels * C)

        @staticmethod
        def backward(ctx, grad):
            inputs, embeddings, dy_dx = ctx.saved_tensors
            B, D, C = ctx.dims
            grad_embeddings = torch.zeros_like(embeddings)
            grad_inputs = torch.zeros(1, device=inputs.device, dtype=inputs.dtype)
            backend.hash_encode_backward(
                grad.contiguous(), inputs, embeddings, offsets_t, grad_embeddings,
                B, D, C, n_levels, base_resolution, False, dy_dx, grad_inputs,
            )  # fmt: skip
            return None, grad_embeddings

    return _HashEncode.apply, offset, offsets_t
