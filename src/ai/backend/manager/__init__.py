"""The manager: API gateway, session registry, scheduler and the source of truth for cluster state."""
