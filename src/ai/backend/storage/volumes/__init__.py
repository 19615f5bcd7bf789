"""Volume backends of the storage proxy (``vfs``) and the descriptor-based path helpers they share."""
