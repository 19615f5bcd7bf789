"""The storage proxy: owns the volumes where virtual folders live (see docs/storage-proxy.md)."""
