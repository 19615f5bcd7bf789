"""API function classes (``ComputeSession``, ``Admin``, ``System``) bound to the current session."""
