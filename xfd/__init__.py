"""xfd: distributed training and large-gallery evaluation for extreme far-distance video person ReID."""

__version__ = "0.1.0"
