"""The Docker kernel backend (see :mod:`ai.backend.agent.backends`)."""
