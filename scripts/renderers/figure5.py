"""Figure 5 (ImageNet, one bpp level): the Figure 4 panels, table and reconstruction grid, which
handle a single bpp level as they do several."""
from renderers.figure4 import render

__all__ = ["render"]
