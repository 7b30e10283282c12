"""The model spec: one declarative TOML file per model in ``models/``.

Validation collects every problem and names each field by its path (``features[2].type``), so a data
scientist fixes a spec in one pass instead of one error at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldeck.errors import SpecError
from modeldeck.schema import Derivation, Feature, FeatureSchema

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("r2", "rmse", "mae")
# Metrics where a smaller value is better; the release gate needs the direction.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
SKLEARN_DATASETS = ("breast_cancer", "wine", "iris", "diabetes")
# Gradient-boosting libraries with a scikit-learn API whose ONNX converters (onnxmltools) training registers.
BOOSTER_ESTIMATORS = (
    "xgboost.XGBClassifier",
    "xgboost.XGBRegressor",
    "lightgbm.LGBMClassifier",
    "lightgbm.LGBMRegressor",
)


@dataclass(frozen=True)
class DatasetSpec:
    source: str
    target: str
    version_id: str | None = None
    derive: tuple[Derivation, ...] = ()

    @property
    def kind(self) -> str:
        """``sklearn``, ``s3``, ``csv`` or ``parquet``."""
        if self.source.startswith("sklearn:"):
            return "sklearn"
        if self.source.startswith("s3://"):
            return "s3"
        return "parquet" if self.source.endswith(".parquet") else "csv"


@dataclass(frozen=True)
class EstimatorSpec:
    class_path: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSpec:
    test_size: float = 0.2
    seed: int = 42
    primary_metric: str = "accuracy"
    tolerance: float = 0.01
    scale: str = "auto"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    dataset: DatasetSpec
    schema: FeatureSchema
    estimator: EstimatorSpec
    training: TrainingSpec
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what the card stores and what the hash covers)."""
        return {
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "dataset": asdict(self.dataset),
            "features": self.schema.to_dict()["features"],
            "estimator": {"class": self.estimator.class_path, "params": self.estimator.params},
            "training": asdict(self.training),
        }

    @property
    def input_schema(self) -> FeatureSchema:
        """What the served graph takes: ``schema`` with each derived feature replaced by its raw source.

        Derivations run inside the ONNX graph, so clients, batch files, capture and drift all see raw inputs.
        """
        return self.schema.raw_inputs(self.dataset.derive)

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def higher_is_better(self) -> bool:
        return self.training.primary_metric not in LOWER_IS_BETTER


class _Checker:
    """Collects problems with their field paths; raises one SpecError listing all of them."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def take(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in table:
            if default is ...:
                self.fail(full, "is required")
            return None if default is ... else default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a spec saying `seed = true` is a mistake, not 1.
        if isinstance(value, bool) and bool not in kinds:
            self.fail(full, f"must be {_kind_name(kinds)}, got {value!r}")
            return None
        if not isinstance(value, kinds):
            self.fail(full, f"must be {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
            return None
        return value

    def unknown(self, table: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in sorted(set(table) - allowed):
            where = f"{path}.{key}" if path else key
            self.fail(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def raise_if_any(self) -> None:
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise SpecError(f"invalid model spec {self.origin}:\n  {lines}")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a spec file. Raises SpecError naming every bad field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"model spec not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"model spec {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read model spec {path}: {exc}") from None
    spec = parse_spec(raw, origin=str(path))
    return spec


def spec_payload(path: str | Path) -> dict[str, Any]:
    """A spec file as plain data for a training execution's input, as written: a relative dataset path stays
    relative to the spec file (the card records it so, with the data's hash, never the training machine's
    absolute path). The execution input's ``spec_dir`` (:func:`spec_dir`) says where to read it from."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read model spec {path}: {exc}") from None


def spec_dir(path: str | Path) -> str:
    """The directory a spec's relative dataset paths are relative to, for the execution input's ``spec_dir``."""
    return str(Path(path).resolve().parent)


def parse_spec(raw: dict[str, Any], origin: str = "<spec>") -> ModelSpec:
    """Validate an already-parsed spec table."""
    c = _Checker(origin)
    c.unknown(raw, "", {"name", "description", "task", "dataset", "features", "estimator", "training"})
    name = c.take(raw, "", "name", str)
    if name is not None and not NAME_RE.match(name):
        c.fail("name", f"must be 2-41 lowercase letters, digits or '-', starting with a letter; got {name!r}")
    description = c.take(raw, "", "description", str, "") or ""

    dataset = _dataset(c, c.take(raw, "", "dataset", dict) or {})
    features = _features(c, c.take(raw, "", "features", list) or [])
    estimator = _estimator(c, c.take(raw, "", "estimator", dict) or {})
    task = c.take(raw, "", "task", str, None) or _infer_task(estimator)
    if task not in ("classification", "regression"):
        c.fail("task", f"must be 'classification' or 'regression', got {task!r}")
    training = _training(c, c.take(raw, "", "training", dict, {}) or {}, task)

    if dataset and features:
        names = [f.name for f in features]
        if dataset.target in names:
            c.fail("dataset.target", f"{dataset.target!r} is also listed as a feature")
        for dup in sorted({n for n in names if names.count(n) > 1}):
            c.fail("features", f"feature {dup!r} is listed more than once")
        _check_derivations(c, dataset.derive, features)
    c.raise_if_any()
    assert dataset is not None and estimator is not None and name is not None
    return ModelSpec(
        name=name,
        task=task,
        dataset=dataset,
        schema=FeatureSchema(tuple(features)),
        estimator=estimator,
        training=training,
        description=description,
    )


def _check_derivations(c: _Checker, derives: tuple[Derivation, ...], features: list[Feature]) -> None:
    """A derivation feeds a listed categorical feature from a numeric column that is not itself derived."""
    by_name = {f.name: f for f in features}
    derived = [d.name for d in derives]
    for i, d in enumerate(derives):
        path = f"dataset.derive[{i}]"
        feat = by_name.get(d.name)
        if derived.count(d.name) > 1 and derived.index(d.name) < i:
            c.fail(f"{path}.name", f"{d.name!r} is derived more than once")
        if feat is None:
            c.fail(f"{path}.name", f"{d.name!r} is not listed in [[features]]; list it as a categorical feature")
        elif feat.kind != "categorical":
            c.fail(f"features[{features.index(feat)}].type", f"{d.name!r} is derived by binning, so it is categorical")
        elif feat.values is not None and set(d.labels) - set(feat.values):
            extra = ", ".join(repr(x) for x in d.labels if x not in feat.values)
            c.fail(f"{path}.labels", f"{extra} not in features[{features.index(feat)}].values")
        if d.source in derived:
            c.fail(f"{path}.source", f"{d.source!r} is itself derived; derive from a column of the dataset")
        elif d.source in by_name and by_name[d.source].kind != "numeric":
            c.fail(f"{path}.source", f"{d.source!r} is a categorical feature; bins need a numeric column")


def _infer_task(estimator: EstimatorSpec | None) -> str:
    if estimator is None:
        return "classification"
    return (
        "regression"
        if estimator.class_path.rsplit(".", 1)[-1].endswith("Regressor")
        or estimator.class_path.rsplit(".", 1)[-1] in {"LinearRegression", "Ridge", "Lasso", "ElasticNet", "SVR"}
        else "classification"
    )


def _dataset(c: _Checker, table: dict[str, Any]) -> DatasetSpec | None:
    c.unknown(table, "dataset", {"source", "target", "version_id", "derive"})
    source = c.take(table, "dataset", "source", str)
    target = c.take(table, "dataset", "target", str)
    version_id = c.take(table, "dataset", "version_id", str, None)
    if source is not None:
        if source.startswith("sklearn:") and source[8:] not in SKLEARN_DATASETS:
            c.fail(
                "dataset.source", f"unknown bundled dataset {source[8:]!r} (choose from: {', '.join(SKLEARN_DATASETS)})"
            )
        elif source.startswith("s3://"):
            if not re.match(r"^s3://[a-z0-9.\-]{3,63}/.+", source):
                c.fail("dataset.source", f"not an s3://bucket/key URI: {source!r}")
            if not version_id:
                c.fail("dataset.version_id", "is required for s3:// sources, so training is reproducible")
        elif not source.startswith("sklearn:") and not source.endswith((".csv", ".parquet")):
            c.fail("dataset.source", f"must be sklearn:<name>, s3://..., or a .csv/.parquet file; got {source!r}")
    derives = []
    for i, item in enumerate(c.take(table, "dataset", "derive", list, []) or []):
        path = f"dataset.derive[{i}]"
        if not isinstance(item, dict):
            c.fail(path, "must be a table")
            continue
        c.unknown(item, path, {"name", "source", "bins", "labels"})
        dname = c.take(item, path, "name", str)
        dsource = c.take(item, path, "source", str)
        bins = c.take(item, path, "bins", list)
        labels = c.take(item, path, "labels", list)
        if bins is not None and (
            not bins
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bins)
            or any(a >= b for a, b in itertools.pairwise(bins))
        ):
            c.fail(f"{path}.bins", "must be a non-empty, strictly increasing list of finite numbers")
            bins = None
        if bins is not None and labels is not None and len(labels) != len(bins) + 1:
            c.fail(f"{path}.labels", f"needs len(bins)+1 = {len(bins) + 1} labels, got {len(labels)}")
            labels = None
        if dname and dsource and bins is not None and labels is not None:
            derives.append(Derivation(dname, dsource, tuple(float(b) for b in bins), tuple(str(s) for s in labels)))
    if source is None or target is None:
        return None
    return DatasetSpec(source=source, target=target, version_id=version_id, derive=tuple(derives))


def _features(c: _Checker, items: list[Any]) -> list[Feature]:
    if not items:
        c.fail("features", "must list at least one feature")
    out = []
    for i, item in enumerate(items):
        path = f"features[{i}]"
        if not isinstance(item, dict):
            c.fail(path, "must be a table like {name = ..., type = ...}")
            continue
        c.unknown(item, path, {"name", "type", "min", "max", "values", "allow_missing"})
        name = c.take(item, path, "name", str)
        if name is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
            c.fail(f"{path}.name", f"must be an identifier (letters, digits, _), got {name!r}")
        kind = c.take(item, path, "type", str)
        if kind is not None and kind not in ("numeric", "categorical"):
            c.fail(f"{path}.type", f"must be 'numeric' or 'categorical', got {kind!r}")
        lo = c.take(item, path, "min", (int, float), None)
        hi = c.take(item, path, "max", (int, float), None)
        values = c.take(item, path, "values", list, None)
        allow_missing = c.take(item, path, "allow_missing", bool, True)
        if kind == "categorical" and (lo is not None or hi is not None):
            c.fail(path, "min/max apply to numeric features only")
        if kind == "numeric" and values is not None:
            c.fail(f"{path}.values", "applies to categorical features only")
        if lo is not None and hi is not None and lo > hi:
            c.fail(f"{path}.min", f"min {lo} is greater than max {hi}")
        if values is not None and (not values or not all(isinstance(v, str) for v in values)):
            c.fail(f"{path}.values", "must be a non-empty list of strings")
            values = None
        if name and kind in ("numeric", "categorical"):
            out.append(
                Feature(
                    name=name,
                    kind=kind,
                    min=None if lo is None else float(lo),
                    max=None if hi is None else float(hi),
                    values=None if values is None else tuple(values),
                    allow_missing=allow_missing,
                )
            )
    return out


def _estimator(c: _Checker, table: dict[str, Any]) -> EstimatorSpec | None:
    c.unknown(table, "estimator", {"class", "params"})
    class_path = c.take(table, "estimator", "class", str)
    params = c.take(table, "estimator", "params", dict, {}) or {}
    if (
        class_path is not None
        and class_path not in BOOSTER_ESTIMATORS
        and not re.match(r"^sklearn(\.[a-z_][a-z0-9_]*)+\.[A-Z][A-Za-z0-9]*$", class_path)
    ):
        c.fail(
            "estimator.class",
            "must be a scikit-learn import path like 'sklearn.linear_model.LogisticRegression', or one of "
            f"{', '.join(BOOSTER_ESTIMATORS)}; got {class_path!r}",
        )
        return None
    return None if class_path is None else EstimatorSpec(class_path, dict(params))


def _training(c: _Checker, table: dict[str, Any], task: str) -> TrainingSpec:
    c.unknown(table, "training", {"test_size", "seed", "primary_metric", "tolerance", "scale"})
    default_metric = "accuracy" if task == "classification" else "r2"
    test_size = c.take(table, "training", "test_size", (int, float), 0.2)
    seed = c.take(table, "training", "seed", int, 42)
    metric = c.take(table, "training", "primary_metric", str, default_metric)
    tolerance = c.take(table, "training", "tolerance", (int, float), 0.01)
    scale = c.take(table, "training", "scale", (str, bool), "auto")
    if test_size is not None and not 0.05 <= test_size <= 0.5:
        c.fail("training.test_size", f"must be between 0.05 and 0.5, got {test_size}")
    if seed is not None and not 0 <= seed < 2**32:
        c.fail("training.seed", f"must be between 0 and 2**32-1, got {seed}")
    allowed = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric is not None and metric not in allowed:
        c.fail("training.primary_metric", f"must be one of {', '.join(allowed)} for {task}, got {metric!r}")
    if tolerance is not None and not 0 <= tolerance < 1:
        c.fail("training.tolerance", f"must be in [0, 1), got {tolerance}")
    if scale not in ("auto", True, False):
        c.fail("training.scale", f"must be 'auto', true or false, got {scale!r}")
    return TrainingSpec(
        test_size=float(test_size or 0.2),
        seed=int(seed if seed is not None else 42),
        primary_metric=metric or default_metric,
        tolerance=float(tolerance or 0.0),
        scale=str(scale).lower() if isinstance(scale, bool) else (scale or "auto"),
    )
