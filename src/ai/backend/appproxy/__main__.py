"""``python -m ai.backend.appproxy``: the same as ``python -m ai.backend.appproxy.server``."""

from .server import main

main()
