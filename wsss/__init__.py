"""wsss: weakly supervised semantic segmentation from image-level labels (EPS, NSROM, ...)."""

__version__ = "0.1.0"
