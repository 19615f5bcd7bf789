"""Agents: heartbeats, liveness, capacity."""
