"""Kernel backends: what runs an agent's kernels behind the ``KernelBackend`` protocol (``base.py``).

``dummy.py`` simulates kernels without containers (tests, scale runs); ``docker/`` runs each kernel in a
container (``backend.py``: the warm pool, image pulls, container config, session preparation, batch tasks and
the event watcher; ``files.py``: session file transfers; ``networks.py``: a cluster session's network;
``scratch.py``: the per-kernel scratch space).
"""
