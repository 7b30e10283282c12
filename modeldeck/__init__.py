"""modeldeck: from a scikit-learn model spec to a safe, monitored serverless inference API."""

__version__ = "0.1.0"
