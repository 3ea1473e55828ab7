"""The peers jaxmedrf is benchmarked against, one module a peer.

DRR projectors, timed by ``benchmarks/projector_peers.py``: :mod:`~benchmarks.peers.nanodrr`,
:mod:`~benchmarks.peers.diffdrr`, :mod:`~benchmarks.peers.mbirjax`, :mod:`~benchmarks.peers.astra`
(with :mod:`~benchmarks.peers.astra_preflight` and the cuFFT stub in ``astra_stub/``) and our own
:mod:`~benchmarks.peers.jaxmedrf`, sharing :mod:`~benchmarks.peers.common`. Hash grid, timed by
``benchmarks/hashgrid.py``: torch-ngp's CUDA encoder in ``torchngp_hash/``. Each module imports its
peer inside its functions, so all of them import without the peer installed.
"""
