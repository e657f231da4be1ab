"""PyTorch backend. The canonical layout is PyTorch's, so this is the shortest port."""

from .backend import TorchBackend as Backend

__all__ = ["Backend"]
