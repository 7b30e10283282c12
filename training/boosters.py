"""XGBoost and LightGBM estimators in specs: their scikit-learn API classes, made reproducible, and converted to
ONNX by onnxmltools' maintained converters registered into skl2onnx, so they convert inside the whole Pipeline.

Imported only when a spec names one of :data:`modeldeck.spec.BOOSTER_ESTIMATORS` (and when a staged pipeline
holding one is unpickled): the libraries are training-only dependencies, never in the inference bundle.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import lightgbm
import numpy as np
import xgboost
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import update_registered_converter
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from sklearn.preprocessing import LabelEncoder

from modeldeck.errors import SpecError


def _fit_strictly(fit: Callable[[], Any]) -> None:
    """Run an XGBoost fit; a parameter XGBoost does not use (a typo in the spec) is a SpecError, not a warning
    lost in the training logs. XGBoost itself names them ("Parameters: { ... } are not used")."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    for warning in caught:
        found = re.search(r"Parameters: (\{.*?\}) are not used", str(warning.message), re.S)
        if found:
            raise SpecError(f"estimator.params: XGBoost does not know {found.group(1)}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


class XGBRegressor(xgboost.XGBRegressor):
    """XGBoost's regressor, refusing parameters it would ignore."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBRegressor:
        """XGBoost's fit; SpecError on a parameter XGBoost does not use."""
        _fit_strictly(lambda: super(XGBRegressor, self).fit(X, y, **kwargs))
        return self


class XGBClassifier(xgboost.XGBClassifier):
    """XGBoost's classifier on the dataset's own labels, refusing parameters it would ignore.

    XGBoost trains only on labels 0..n-1, so ``fit`` encodes them and ``classes_`` / ``predict`` give the
    original ones back; the ONNX converter reads ``classes_``, so the graph's label output is the class names
    too, as a scikit-learn classifier's is.
    """

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBClassifier:
        """Fit on the labels encoded as 0..n-1, keeping the original labels for ``classes_``."""
        encoder = LabelEncoder().fit(y)
        self.__dict__.pop("labels_", None)  # XGBoost's fit checks the encoded classes against classes_
        _fit_strictly(lambda: super(XGBClassifier, self).fit(X, encoder.transform(y), **kwargs))
        self.labels_ = encoder.classes_
        return self

    @property
    def classes_(self) -> np.ndarray:
        labels = self.__dict__.get("labels_")
        return labels if labels is not None else np.arange(self.n_classes_)

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
        """The original labels."""
        return np.asarray(self.labels_)[np.asarray(super().predict(X, **kwargs), dtype=np.int64)]


# The spec's class path -> (the class training builds, the defaults that make retraining reproducible).
# One thread: a model retrained from the same spec and data must give the same ONNX bytes, and neither library
# documents that its multi-threaded training does for every dataset; `verbose=-1` keeps LightGBM's chatter out
# of the logs.
_XGB_DEFAULTS = {"n_jobs": 1}
_LGBM_DEFAULTS = {"n_jobs": 1, "deterministic": True, "force_row_wise": True, "verbose": -1}
BOOSTERS: dict[str, tuple[type, dict[str, Any]]] = {
    "xgboost.XGBClassifier": (XGBClassifier, _XGB_DEFAULTS),
    "xgboost.XGBRegressor": (XGBRegressor, _XGB_DEFAULTS),
    "lightgbm.LGBMClassifier": (lightgbm.LGBMClassifier, _LGBM_DEFAULTS),
    "lightgbm.LGBMRegressor": (lightgbm.LGBMRegressor, _LGBM_DEFAULTS),
}


class _Float32Thresholds:
    """A converter's container whose tree-ensemble thresholds are the float32 numbers that split float32 inputs
    exactly as the library's own (double) thresholds split them.

    The served graph takes float32 inputs (training data are float32-exact too) and ai.onnx.ml stores node values
    as float32. onnx rounds a double threshold to the *nearest* float32, which can land on the far side of a
    value: LightGBM splits between two adjacent data values at their midpoint, and a float32 input equal to the
    upper one then goes left in ONNX and right in LightGBM (seen: diabetes, 100 trees, |diff| 2.7 on one row).
    For ``x <= t`` the exact float32 threshold is the largest float32 not above t; for ``x < t``, the smallest
    not below it.
    """

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, *args: Any, **attrs: Any) -> Any:
        if op_type.startswith("TreeEnsemble") and "nodes_values" in attrs:
            attrs["nodes_values"] = float32_thresholds(attrs["nodes_values"], attrs["nodes_modes"])
        return self._container.add_node(op_type, *args, **attrs)


def float32_thresholds(values: Any, modes: Any) -> list[float]:
    """Each double threshold as the float32 that gives the same comparison result for every float32 input."""
    out = []
    for value, mode in zip(values, modes, strict=True):
        t = np.float32(value)
        if mode == "BRANCH_LEQ" and float(t) > value:
            t = np.nextafter(t, np.float32(-np.inf))
        elif mode == "BRANCH_LT" and float(t) < value:
            t = np.nextafter(t, np.float32(np.inf))
        out.append(float(t))
    return out


def _exact(convert: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
    def converter(scope: Any, operator: Any, container: Any) -> None:
        convert(scope, operator, _Float32Thresholds(container))

    return converter


_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
# Each class as skl2onnx registers it: (alias, shape calculator, converter, options). The shape calculators are
# skl2onnx's own, so a classifier has skl2onnx's (label, probabilities) outputs, as a scikit-learn one does.
CONVERTERS: dict[type, tuple[str, Callable[..., Any], Callable[..., Any], dict[str, Any] | None]] = {
    XGBClassifier: (
        "ModeldeckXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,  # XGBoost's thresholds are float32 already
        _CLASSIFIER_OPTIONS,
    ),
    XGBRegressor: ("ModeldeckXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost, None),
    lightgbm.LGBMClassifier: (
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        _exact(convert_lightgbm),
        _CLASSIFIER_OPTIONS,
    ),
    lightgbm.LGBMRegressor: (
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        _exact(convert_lightgbm),
        {"split": None},
    ),
}


def register_converters() -> None:
    """Register :data:`CONVERTERS` into skl2onnx (done on import; again to undo a replaced one)."""
    for cls, (alias, shapes, converter, options) in CONVERTERS.items():
        update_registered_converter(cls, alias, shapes, converter, options=options)


register_converters()


def booster(class_path: str, params: dict[str, Any], seed: int) -> Any:
    """The estimator a spec's booster class path names, seeded and single-threaded unless its params say
    otherwise. A parameter LightGBM does not know raises TypeError here (XGBoost's are checked at fit, where
    XGBoost names them): both libraries would otherwise only warn and train without it."""
    cls, defaults = BOOSTERS[class_path]
    if class_path.startswith("lightgbm."):
        unknown = sorted(set(params) - _lightgbm_parameters())
        if unknown:
            raise TypeError(f"LightGBM does not know {', '.join(map(repr, unknown))}")
    return cls(**{"random_state": seed, **defaults, **params})


def _lightgbm_parameters() -> set[str]:
    """The scikit-learn API's arguments and every LightGBM parameter with its aliases (LightGBM's own list)."""
    api = set(inspect.signature(lightgbm.LGBMModel.__init__).parameters) - {"self", "kwargs"}
    aliases = lightgbm.basic._ConfigAliases._get_all_param_aliases()  # private: LightGBM has no public list
    return api | set(aliases) | {a for names in aliases.values() for a in names}
