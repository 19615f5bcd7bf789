"""``python -m ai.backend.client.cli`` runs the ``backend.ai`` command."""

from .main import main

main()
