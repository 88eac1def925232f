"""transferlab: reproducible transfer-learning studies as a DVC pipeline."""

__version__ = "0.1.0"
