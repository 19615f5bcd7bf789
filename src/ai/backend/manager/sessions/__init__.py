"""Compute sessions: their statuses and transitions, admission, store, launcher, lifecycle and kernel proxy."""
