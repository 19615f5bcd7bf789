"""Legacy (19.09) location of :class:`~ai.backend.client.func.admin.Admin`."""

from .func.admin import Admin

__all__ = ("Admin",)
