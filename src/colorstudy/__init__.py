"""colorstudy: a reproducible comparison of deep-learning photo colorization models."""

from colorstudy import _torchvision_compat  # noqa: F401  (must precede any torchvision import)

__version__ = "0.1.0"
