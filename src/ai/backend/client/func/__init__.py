"""API function classes bound to the current session.

``ComputeSession``, ``Admin`` and ``System``, plus the administration classes ``Agent``,
``Auth``, ``Domain``, ``Group``, ``Image``, ``KeyPair``, ``KeypairResourcePolicy``,
``Resource``, ``ScalingGroup`` and ``User`` (one module each).
"""
