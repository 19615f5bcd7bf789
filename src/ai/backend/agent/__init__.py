"""The agent: runs kernels (containers) on one host for the manager and reports its capacity."""
