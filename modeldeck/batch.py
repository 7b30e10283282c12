"""Batch scoring: a CSV or Parquet file through the same ONNX session and schema validation as the API.

The file is read and scored in chunks (10,000 rows by default), so memory stays flat for any file size.
The output holds the input's columns followed by ``prediction`` (and ``probability_<class>`` per class for
classifiers); ``.jsonl`` output has ``probabilities`` as a list instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modeldeck.errors import ModeldeckError, ValidationError
from modeldeck.onnxmodel import OnnxModel

CHUNK_ROWS = 10_000
INPUTS = (".csv", ".parquet", ".pq")
OUTPUTS = (".csv", ".parquet", ".pq", ".jsonl")


class BatchError(ModeldeckError):
    """The input or output file cannot be used (format, columns, values)."""


class _Where(str):
    """A validation location whose ``{row}`` counts from the start of the file, not of the chunk."""

    offset = 0

    def format(self, *args: Any, **kwargs: Any) -> str:
        kwargs["row"] = int(kwargs.get("row", 0)) + self.offset
        return super().format(*args, **kwargs)


@dataclass(frozen=True)
class BatchResult:
    rows: int
    chunks: int
    output: Path


def count_rows(path: Path) -> int | None:
    """Rows in the input, when cheap to know (Parquet metadata; a CSV's line count)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return max(0, lines - 1)


def check_paths(source: Path, output: Path) -> None:
    """Refuse an unusable input or output before any work starts (formats by suffix; the input exists)."""
    if source.suffix.lower() not in INPUTS:
        raise BatchError(
            f"{source}: unsupported input format {source.suffix.lower() or '(none)'}; use .csv or .parquet"
        )
    if output.suffix.lower() not in OUTPUTS:
        raise BatchError(
            f"{output}: unsupported output format {output.suffix.lower() or '(none)'}; use .csv, .parquet or .jsonl"
        )
    if not source.is_file():
        raise BatchError(f"{source}: no such file")


def read_chunks(path: Path, model: OnnxModel, chunk_rows: int) -> Iterator[dict[str, np.ndarray]]:
    """The input as chunks of columns (name → 1-D array), categorical columns read as text."""
    if path.suffix.lower() == ".csv":
        import pandas as pd

        text = {f.name: str for f in model.card.schema.categorical}
        numeric = [f.name for f in model.card.schema.features if f.numeric]
        try:
            reader = pd.read_csv(path, chunksize=chunk_rows, dtype=text, keep_default_na=True)
            first_row = 1
            for frame in reader:
                for name in numeric:
                    if name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name]):
                        frame[name] = _numbers(frame[name], name, first_row, path)
                yield {str(c): frame[c].to_numpy() for c in frame.columns}
                first_row += len(frame)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise BatchError(f"{path}: not a readable CSV file ({exc})") from None
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
    except pa.ArrowException as exc:
        raise BatchError(f"{path}: not a readable Parquet file ({exc})") from None


def _numbers(column: Any, name: str, first_row: int, path: Path) -> Any:
    """A numeric column that pandas read as text because some cell is not a number: parse it, and name the
    first bad cell (pandas turns the whole column into strings, so the schema alone would blame row 1)."""
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce")
    bad = parsed.isna() & column.notna()
    if bad.any():
        position = int(bad.to_numpy().argmax())
        value = column.iloc[position]
        raise BatchError(f"{path}: row {first_row + position}: {name!r} must be a number, got {value!r:.40}")
    return parsed


class _Writer:
    def __init__(self, path: Path, classes: list[Any] | None) -> None:
        self.path, self.kind, self.classes = path, path.suffix.lower(), classes
        self._first = True
        self._parquet: Any = None
        self._jsonl: Any = None

    def write(self, inputs: dict[str, np.ndarray], labels: np.ndarray, proba: np.ndarray | None) -> None:
        if self.kind == ".jsonl":
            if self._jsonl is None:
                self._jsonl = self.path.open("w")
            names = list(inputs)
            columns = [inputs[n].tolist() for n in names]
            label_list, proba_list = labels.tolist(), (proba.tolist() if proba is not None else None)
            for i in range(len(label_list)):
                row: dict[str, Any] = {n: _json_value(col[i]) for n, col in zip(names, columns, strict=True)}
                row["prediction"] = label_list[i]
                if proba_list is not None:
                    row["probabilities"] = proba_list[i]
                self._jsonl.write(json.dumps(row) + "\n")
            return
        import pandas as pd

        frame = pd.DataFrame(inputs)
        frame["prediction"] = labels
        if proba is not None and self.classes is not None:
            for j, cls in enumerate(self.classes):
                frame[f"probability_{cls}"] = proba[:, j]
        if self.kind == ".csv":
            frame.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._first = False

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def score_file(
    model: OnnxModel,
    source: Path,
    output: Path,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] = lambda rows: None,
) -> BatchResult:
    """Validate and score ``source`` chunk by chunk into ``output``; stops at the first invalid row.

    On any error the partial output is removed, so a failed run never leaves a plausible-looking file.
    """
    check_paths(source, output)
    schema = model.card.schema
    writer = _Writer(output, model.card.classes)
    rows = chunks = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        for arrays in read_chunks(source, model, chunk_rows):
            where = _Where("row {row}: {feature!r}")
            where.offset = rows + 1  # 1-based data rows, as a spreadsheet shows them below the header
            try:
                columns = schema.columns_from_arrays(arrays, where)
            except ValidationError as exc:
                raise BatchError(f"{source}: {exc}") from None
            prediction = model.predict(columns)
            writer.write(arrays, prediction.labels, prediction.probabilities)
            rows += len(prediction)
            chunks += 1
            progress(len(prediction))
        if rows == 0:
            raise BatchError(f"{source}: no rows to score")
    except BaseException:
        writer.close()
        output.unlink(missing_ok=True)
        raise
    writer.close()
    return BatchResult(rows, chunks, output)
