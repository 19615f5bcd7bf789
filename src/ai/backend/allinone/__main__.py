"""``python -m ai.backend.allinone up|down|status`` (also ``backend.ai server ...``)."""

from .launcher import main

main()
