"""Loading a spec's dataset into a validated frame: bundled scikit-learn data, CSV/Parquet, or S3."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeldeck.errors import DatasetError, ValidationError
from modeldeck.schema import MISSING_CATEGORY, Derivation
from modeldeck.spec import DatasetSpec, ModelSpec

MIN_ROWS = 20


@dataclass(frozen=True)
class Dataset:
    """A spec's data, typed as the schema says: numerics float32-exact, categoricals strings."""

    frame: pd.DataFrame
    target: np.ndarray
    source: str
    version_id: str | None
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.frame)


def _sklearn_frame(name: str) -> tuple[pd.DataFrame, bytes]:
    from sklearn import datasets  # Imported here: only bundled sources need it.

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [str(c).replace(" ", "_").replace("(", "").replace(")", "") for c in frame.columns]
    if getattr(bunch, "target_names", None) is not None and frame["target"].dtype.kind in "iu":
        frame["target"] = np.asarray(bunch.target_names)[frame["target"].to_numpy()]
    raw = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    return frame, raw


def _read_bytes(spec: DatasetSpec, base_dir: Path, s3: Any) -> bytes:
    if spec.kind == "s3":
        bucket, _, key = spec.source[5:].partition("/")
        if s3 is None:
            raise DatasetError(f"dataset {spec.source} needs an S3 client")
        try:
            return s3.get_object(Bucket=bucket, Key=key, VersionId=spec.version_id)["Body"].read()
        except Exception as exc:  # botocore raises many types; all mean "cannot read the data"
            raise DatasetError(f"cannot read {spec.source} (version {spec.version_id}): {exc}") from None
    path = Path(spec.source)
    path = path if path.is_absolute() else base_dir / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None


def load_dataset(spec: ModelSpec, base_dir: Path = Path("."), s3: Any = None) -> Dataset:
    """Load, derive and validate the spec's dataset. Raises DatasetError naming the problem."""
    ds = spec.dataset
    if ds.kind == "sklearn":
        frame, raw = _sklearn_frame(ds.source.split(":", 1)[1])
    else:
        raw = _read_bytes(ds, base_dir, s3)
        try:
            is_parquet = ds.source.endswith(".parquet")
            frame = pd.read_parquet(io.BytesIO(raw)) if is_parquet else pd.read_csv(io.BytesIO(raw))
        except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
            raise DatasetError(f"cannot parse dataset {ds.source}: {exc}") from None
    return validate_frame(
        frame, spec, source=ds.source, version_id=ds.version_id, digest=hashlib.sha256(raw).hexdigest()
    )


def derive_column(values: np.ndarray, derivation: Derivation) -> list[str]:
    """The training-time value of a derived feature: ``pandas.cut`` on right-closed bins.

    ``values`` must be the float32 numbers the served graph receives (as float64), so a value next to an
    edge falls in the same bin in training and serving. NaN gives ``MISSING_CATEGORY``, as in serving.
    """
    edges = [-np.inf, *derivation.bins, np.inf]
    binned = pd.cut(pd.Series(values, dtype=np.float64), edges, labels=list(derivation.labels), right=True)
    return [MISSING_CATEGORY if pd.isna(v) else str(v) for v in binned.astype(object).tolist()]


def validate_frame(frame: pd.DataFrame, spec: ModelSpec, source: str, version_id: str | None, digest: str) -> Dataset:
    """Check columns, types and size; coerce the raw inputs to the schema's canonical types, then derive.

    The frame holds the served graph's raw inputs (``spec.input_schema``) and the derived features the
    Pipeline is fitted on (``spec.schema``), computed from the float32 inputs.
    """
    for d in spec.dataset.derive:
        if d.source not in frame.columns:
            raise DatasetError(f"dataset.derive {d.name!r}: source column {d.source!r} is not in the dataset")
    inputs = spec.input_schema
    target = spec.dataset.target
    needed = [target, *inputs.names]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        kind = "target" if target in missing else "feature"
        raise DatasetError(
            f"{source}: missing {kind} column(s) {', '.join(map(repr, missing))}; "
            f"the dataset has {', '.join(map(str, list(frame.columns)[:12]))}"
        )
    if len(frame) == 0:
        raise DatasetError(f"{source}: the dataset is empty")
    if len(frame) < MIN_ROWS:
        raise DatasetError(f"{source}: only {len(frame)} rows; at least {MIN_ROWS} are needed to train and hold out")
    out = pd.DataFrame(index=range(len(frame)))
    for f in inputs.features:
        col = frame[f.name].reset_index(drop=True)
        if f.numeric:
            numbers = pd.to_numeric(col, errors="coerce")
            bad = numbers.isna() & col.notna()
            if bad.any() or col.dtype == bool:
                row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
                raise DatasetError(
                    f"{source}: feature {f.name!r} is numeric but row {row} holds "
                    f"{col.iloc[row]!r} ({type(col.iloc[row]).__name__})"
                )
            out[f.name] = numbers.astype(np.float32).astype(np.float64)
        else:
            out[f.name] = [
                MISSING_CATEGORY if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                for v in col.tolist()
            ]
    for d in inputs.derived:
        out[d.name] = derive_column(out[d.source].to_numpy(), d)
    try:
        # The schema's own checks (ranges, allowed values, missing) apply to training data too: to the raw
        # inputs as serving checks them, and to the derived features as the Pipeline sees them.
        for schema in (inputs, spec.schema):
            arrays = {f.name: out[f.name].to_numpy() if f.numeric else out[f.name].tolist() for f in schema.features}
            located = source.replace("{", "{{").replace("}", "}}")  # a path is text, not a template
            schema.columns_from_arrays(arrays, where=f"{located} row {{row}}: {{feature!r}}")
    except ValidationError as exc:
        raise DatasetError(str(exc)) from None
    y = frame[target].reset_index(drop=True)
    if y.isna().any():
        raise DatasetError(f"{source}: target {target!r} is missing in row {int(np.flatnonzero(y.isna())[0])}")
    if spec.task == "classification":
        labels = y.to_numpy()
        if y.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        if len(np.unique(labels)) < 2:
            raise DatasetError(f"{source}: target {target!r} has a single class; a classifier needs two or more")
    else:
        numbers = pd.to_numeric(y, errors="coerce")
        if numbers.isna().any():
            raise DatasetError(f"{source}: target {target!r} must be numeric for a regressor")
        labels = numbers.to_numpy(np.float64)
    return Dataset(frame=out, target=labels, source=source, version_id=version_id, sha256=digest)
