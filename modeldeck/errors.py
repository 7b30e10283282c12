"""Exceptions shared by every layer. Each carries a message meant for a human."""


class ModeldeckError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class SpecError(ModeldeckError):
    """A model spec is invalid. The message names the offending field."""


class DatasetError(ModeldeckError):
    """The dataset does not match the spec (missing column, wrong type, empty...)."""


class ParityError(ModeldeckError):
    """scikit-learn and onnxruntime disagree on the holdout."""


class RegistryError(ModeldeckError):
    """A registry read or write failed, or an artifact failed verification."""


class NotFoundError(RegistryError):
    """A model, version or champion does not exist."""


class ValidationError(ModeldeckError):
    """A request's data does not match the model's feature schema (HTTP 400)."""

    status = 400


class PayloadTooLarge(ValidationError):
    """Too many rows or too many bytes (HTTP 413)."""

    status = 413
