"""Building and fitting the whole scikit-learn Pipeline (impute, scale, one-hot, estimator) from a spec."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modeldeck.errors import DatasetError, SpecError
from modeldeck.spec import BOOSTER_ESTIMATORS, ModelSpec
from training.datasets import Dataset

# Tree models split on thresholds, so scaling cannot help them; it can only hurt parity, because
# float32 rounding of scaled values moves rows across thresholds in the ONNX graph.
_SCALE_INVARIANT_MODULES = ("sklearn.tree", "sklearn.ensemble", "xgboost.", "lightgbm.")


def resolve_estimator(spec: ModelSpec) -> Any:
    """Instantiate the spec's estimator; SpecError points at estimator.class or estimator.params."""
    module_name, _, class_name = spec.estimator.class_path.rpartition(".")
    try:
        if spec.estimator.class_path in BOOSTER_ESTIMATORS:
            estimator = _booster(spec)
        else:
            estimator = _sklearn_estimator(spec, getattr(importlib.import_module(module_name), class_name))
    except (ImportError, AttributeError):
        raise SpecError(f"estimator.class: unknown estimator {spec.estimator.class_path!r}") from None
    except TypeError as exc:
        raise SpecError(f"estimator.params: {exc}") from None
    if spec.task == "classification" and not is_classifier(estimator):
        raise SpecError(f"estimator.class: {class_name} is not a classifier, but task is 'classification'")
    if spec.task == "regression" and not is_regressor(estimator):
        raise SpecError(f"estimator.class: {class_name} is not a regressor, but task is 'regression'")
    return estimator


def _booster(spec: ModelSpec) -> Any:
    try:
        from training import boosters  # the libraries load only for a spec that uses one
    except ImportError as exc:
        raise SpecError(
            f"estimator.class: {spec.estimator.class_path} needs the training requirements "
            f"(training/requirements.txt: xgboost-cpu, lightgbm, onnxmltools): {exc}"
        ) from None
    return boosters.booster(spec.estimator.class_path, spec.estimator.params, spec.training.seed)


def _sklearn_estimator(spec: ModelSpec, cls: type) -> Any:
    params = dict(spec.estimator.params)
    if "random_state" in inspect.signature(cls).parameters and "random_state" not in params:
        params["random_state"] = spec.training.seed
    return cls(**params)


def wants_scaling(spec: ModelSpec) -> bool:
    if spec.training.scale != "auto":
        return spec.training.scale == "true"
    return not spec.estimator.class_path.startswith(_SCALE_INVARIANT_MODULES)


def build_pipeline(spec: ModelSpec) -> Pipeline:
    """Preprocessing and estimator as one Pipeline, so ONNX conversion covers all of it."""
    numeric = [f.name for f in spec.schema.numeric]
    categorical = [f.name for f in spec.schema.categorical]
    transformers = []
    if numeric:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if wants_scaling(spec):
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown=spec.schema.handle_unknown, sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("estimator", resolve_estimator(spec))])


@dataclass
class Split:
    train_x: Any
    test_x: Any
    train_y: np.ndarray
    test_y: np.ndarray


def split(spec: ModelSpec, data: Dataset) -> Split:
    """A seeded, stratified (for classifiers) holdout split."""
    stratify = data.target if spec.task == "classification" else None
    try:
        tx, vx, ty, vy = train_test_split(
            data.frame,
            data.target,
            test_size=spec.training.test_size,
            random_state=spec.training.seed,
            stratify=stratify,
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split {data.source} into train and holdout: {exc}") from None
    return Split(tx.reset_index(drop=True), vx.reset_index(drop=True), ty, vy)


def fit(spec: ModelSpec, data: Split) -> Pipeline:
    pipeline = build_pipeline(spec)
    try:
        pipeline.fit(data.train_x, data.train_y)
    except ValueError as exc:
        raise DatasetError(f"training failed: {exc}") from None
    return pipeline


def hyperparameters(pipeline: Pipeline) -> dict[str, Any]:
    """The estimator's effective parameters, JSON-safe."""
    params = pipeline.named_steps["estimator"].get_params(deep=False)
    # A NaN (XGBoost's `missing`) is not JSON: it is recorded as its repr, as any other non-plain value.
    return {
        k: v if isinstance(v, (int, str, bool, type(None))) or (isinstance(v, float) and np.isfinite(v)) else repr(v)
        for k, v in sorted(params.items())
    }
