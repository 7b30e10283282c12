"""Batch scoring: files through the same ONNX session and schema validation as the API.

- A local CSV or Parquet file (``modeldeck predict`` on files): read and scored in chunks (10,000 rows by
  default), so memory stays flat for any file size. The output holds the input's columns followed by
  ``prediction`` (and ``probability_<class>`` per class for classifiers); ``.jsonl`` output has
  ``probabilities`` as a list instead. An invalid row stops the run.
- The batch state machine's steps (``lambdas/batch``): :func:`plan` checks a request and pins the version,
  :func:`score_batch` scores one Distributed Map batch of S3 objects (CSV, JSON Lines, Parquet) into one
  Parquet file each, rejecting invalid rows with their reasons instead of stopping, and :func:`write_manifest`
  writes the run's manifest from the ResultWriter's records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
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


# Cloud batch scoring (the batch state machine's Lambda): one S3 object in, one Parquet file out. Unlike a local
# file, a bad row does not stop the run: it is rejected with its reason, counted, and the rest are scored.
CLOUD_INPUTS = (".csv", ".jsonl", ".parquet", ".pq")
EXAMPLES_PER_REASON = 5
MAX_REASONS = 20


@dataclass
class Rejections:
    """Rejected rows by reason: a count, and the first few rows with their full message."""

    reasons: dict[str, dict[str, Any]]

    def add(self, reason: str, row: int, message: str) -> None:
        if reason not in self.reasons and len(self.reasons) >= MAX_REASONS:
            reason = "other reasons"
        entry = self.reasons.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES_PER_REASON:
            entry["examples"].append({"row": row, "error": message})

    @property
    def count(self) -> int:
        return sum(int(e["count"]) for e in self.reasons.values())


def reason_of(message: str) -> str:
    """A validation message without its value, so rows rejected for the same reason group together
    (``'x' = 7 is outside the allowed range [0, 5]`` → ``'x' is outside the allowed range [0, 5]``)."""
    import re

    message = re.sub(r" = .*? is ", " is ", message, count=1)
    return re.sub(r", got (a |an )?(\w+).*$", r", got \2", message)


def valid_rows(
    schema: Any, arrays: dict[str, Any], n: int, rejections: Rejections, rows: np.ndarray | None = None
) -> np.ndarray:
    """The mask of rows that pass the schema's validation (:meth:`FeatureSchema.columns_from_arrays`, the one
    definition), each failing row recorded in ``rejections`` with its file row number (``rows[i]``, else ``i``).

    Whole slices are validated at once; only a failing slice is split in halves, so the cost stays near one
    validation pass when bad rows are rare."""
    keep = np.ones(n, dtype=bool)
    number = np.arange(n) if rows is None else rows
    missing = [name for name in schema.names if name not in arrays]
    if missing:
        message = f"missing column(s) {', '.join(map(repr, missing))}"
        for i in range(n):
            rejections.add(message, int(number[i]), message)
        keep[:] = False
        return keep

    def check(lo: int, hi: int) -> None:
        try:
            schema.columns_from_arrays({k: v[lo:hi] for k, v in arrays.items()}, "{feature!r}")
            return
        except ValidationError as exc:
            if hi - lo == 1:
                keep[lo] = False
                rejections.add(reason_of(str(exc)), int(number[lo]), f"row {number[lo]}: {exc}")
                return
        mid = (lo + hi) // 2
        check(lo, mid)
        check(mid, hi)

    if n:
        check(0, n)
    return keep


def cloud_input(key: str) -> bool:
    """Whether an object is an input the batch scores (by suffix); others are listed as skipped."""
    return key.lower().endswith(CLOUD_INPUTS)


def output_key(key: str, input_prefix: str, output_prefix: str) -> str:
    """Where an input object's scores go: its path under the input prefix, under the output prefix, with
    ``.parquet`` appended unless it is Parquet already (``in/a.csv`` → ``out/a.csv.parquet``), so two inputs
    never share an output."""
    relative = key[len(input_prefix) :] if key.startswith(input_prefix) else key.rsplit("/", 1)[-1]
    suffix = "" if relative.lower().endswith((".parquet", ".pq")) else ".parquet"
    return f"{output_prefix}{relative}{suffix}"


NOT_AN_OBJECT = "the line is not a JSON object"


def read_object(key: str, data: bytes, schema: Any) -> tuple[dict[str, Any], int, np.ndarray]:
    """An S3 object's rows as columns (name → 1-D array), the row count, and the mask of rows that are not
    records at all (a JSON Lines line that is not an object): CSV with a header, JSON Lines or Parquet."""
    import io

    import pyarrow as pa

    lower = key.lower()
    try:
        if lower.endswith(".jsonl"):
            return _jsonl_columns(data, schema)
        if lower.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
        else:
            import pyarrow.csv as pcsv

            text = {f.name: pa.string() for f in schema.categorical}
            table = pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(column_types=text))
    except pa.ArrowException as exc:
        raise BatchError(f"{key}: not a readable {lower.rsplit('.', 1)[-1].upper()} file ({exc})") from None
    not_records = np.zeros(table.num_rows, dtype=bool)
    numeric = {f.name for f in schema.features if f.numeric}
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in numeric and pa.types.is_string(column.type):
            columns[name] = _parsed_numbers(column.to_pylist())
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns, table.num_rows, not_records


def _parsed_numbers(values: list[Any]) -> np.ndarray:
    """A numeric column read as text because some cell is not a number: the numbers parsed, the bad cells left
    as text for validation to reject (row by row, not the whole column)."""
    out: list[Any] = []
    for v in values:
        if v is None or v == "":
            out.append(None)
            continue
        try:
            out.append(float(v))
        except ValueError:
            out.append(v)
    return np.array(out, dtype=object)


def _jsonl_columns(data: bytes, schema: Any) -> tuple[dict[str, Any], int, np.ndarray]:
    rows: list[dict[str, Any] | None] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        rows.append(row if isinstance(row, dict) else None)
    columns = {f.name: np.array([r.get(f.name) if r else None for r in rows], dtype=object) for f in schema.features}
    return columns, len(rows), np.array([r is None for r in rows], dtype=bool)


def score_object(model: OnnxModel, key: str, data: bytes, chunk_rows: int = CHUNK_ROWS) -> tuple[Any, dict[str, Any]]:
    """Score one input object: the output table (``row``, ``prediction``, ``probability_<class>``) of the rows
    that passed validation, and the file's summary (rows in and out, rejections by reason)."""
    import pyarrow as pa

    schema = model.card.schema
    columns, n, not_records = read_object(key, data, schema)
    rejections = Rejections({})
    for row in np.flatnonzero(not_records):
        rejections.add(NOT_AN_OBJECT, int(row), f"row {row}: {NOT_AN_OBJECT}")
    parts: list[Any] = []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        candidates = start + np.flatnonzero(~not_records[start:stop])
        chunk = {k: v[candidates] for k, v in columns.items()}
        rows = candidates[valid_rows(schema, chunk, candidates.size, rejections, rows=candidates)]
        if rows.size == 0:
            continue
        valid = {k: v[rows] for k, v in columns.items()}
        prediction = model.predict(schema.columns_from_arrays(valid))
        part: dict[str, Any] = {"row": rows.astype(np.int64), "prediction": prediction.labels}
        if prediction.probabilities is not None and model.card.classes is not None:
            for j, cls in enumerate(model.card.classes):
                part[f"probability_{cls}"] = prediction.probabilities[:, j]
        parts.append(pa.table(part))
    table = pa.concat_tables(parts) if parts else None
    rows_out = 0 if table is None else table.num_rows
    summary = {"file": key, "rows_in": n, "rows_out": rows_out, "rejected": rejections.reasons}
    return table, summary


def merge_summaries(files: list[dict[str, Any]], examples: int = 10) -> dict[str, Any]:
    """The run's totals from the per-file summaries: rows in, out, rejected, and rejections by reason (counts
    summed; the first ``examples`` rows per reason, each naming its file)."""
    reasons: dict[str, dict[str, Any]] = {}
    for summary in files:
        for reason, entry in (summary.get("rejected") or {}).items():
            total = reasons.setdefault(reason, {"count": 0, "examples": []})
            total["count"] += int(entry["count"])
            for example in entry["examples"]:
                if len(total["examples"]) < examples:
                    total["examples"].append({"file": summary["file"], **example})
    rows_in = sum(int(s.get("rows_in", 0)) for s in files)
    rows_out = sum(int(s.get("rows_out", 0)) for s in files)
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": sum(int(e["count"]) for e in reasons.values()),
        "rejected": reasons,
    }


@dataclass(frozen=True)
class Location:
    """An S3 prefix, ``s3://bucket/prefix/`` (the prefix ends with ``/``, or is empty for the whole bucket)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: Any, what: str) -> Location:
        if not isinstance(uri, str) or not uri.startswith("s3://") or len(uri) <= len("s3://"):
            raise BatchError(f"{what}: expected an S3 prefix like s3://bucket/prefix/, got {uri!r:.200}")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise BatchError(f"{what}: {uri!r} names no bucket")
        return cls(bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def within(self, other: Location) -> bool:
        return self.bucket == other.bucket and self.prefix.startswith(other.prefix)

    def to_dict(self) -> dict[str, str]:
        return {"bucket": self.bucket, "prefix": self.prefix}


@dataclass(frozen=True)
class JobSettings:
    """The batch function's settings: where it may read inputs and write outputs (its role's grants)."""

    inputs: Location
    outputs: Location

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobSettings:
        return cls(
            Location.parse(env["BATCH_INPUT"], "BATCH_INPUT"), Location.parse(env["BATCH_OUTPUT"], "BATCH_OUTPUT")
        )


REQUEST_FIELDS = frozenset({"model", "version", "input", "output"})
MANIFEST = "_manifest.json"
RESULTS = "_results/"


def plan(request: Mapping[str, Any], registry: Any, settings: JobSettings, execution: str = "") -> dict[str, Any]:
    """Check a batch request ``{model, version?, input, output}`` and pin the version (default: the champion,
    else the latest); the returned document is the state every later step reads (``execution``: its name)."""
    from modeldeck import registry as registry_module

    if not isinstance(request, Mapping):
        raise BatchError("the request must be an object {model, version?, input, output}")
    unknown = sorted(set(request) - REQUEST_FIELDS)
    if unknown:
        raise BatchError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected model, version, input, output")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise BatchError("'model' is required: the registered model's name")
    source = Location.parse(request.get("input"), "input")
    target = Location.parse(request.get("output"), "output")
    if not source.within(settings.inputs):
        raise BatchError(f"input {source} is outside the batch's input location {settings.inputs}")
    if not target.within(settings.outputs):
        raise BatchError(f"output {target} is outside the batch's output location {settings.outputs}")
    if source.within(target) or target.within(source):
        raise BatchError(f"input {source} and output {target} overlap; use separate prefixes")
    version = request.get("version")
    if version is None:
        champion = registry.get_champion(model)
        version, chosen = (champion, "champion") if champion is not None else (registry.latest(model), "latest")
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BatchError(f"'version' must be a version number (1 or more), got {version!r}")
    else:
        chosen = "requested"
    registry.get_card(model, version)  # the version exists (NotFoundError names it otherwise)
    return {
        "execution": execution,
        "model": model,
        "version": version,
        "version_source": chosen,
        "input": source.to_dict(),
        # The ResultWriter's prefix, one per execution: the child executions' records, beside the scores.
        "output": {**target.to_dict(), "results": f"{target.prefix}{RESULTS}{execution or 'run'}"},
        "started": registry_module.utcnow(),
    }


def score_batch(batch: Mapping[str, Any], s3: Any, load: Callable[[str, int], OnnxModel]) -> dict[str, Any]:
    """One child execution of the Distributed Map: ``{"Items": [listed objects], "BatchInput": plan}``. Each
    input object is scored into one Parquet file under the output prefix; other objects are listed as skipped."""
    import io

    import pyarrow.parquet as pq

    job = batch["BatchInput"]
    model = load(job["model"], int(job["version"]))
    source, target = job["input"], job["output"]
    files: list[dict[str, Any]] = []
    for item in batch["Items"]:
        key = item["Key"]
        if not cloud_input(key):
            files.append({"file": key, "skipped": f"not a {', '.join(CLOUD_INPUTS)} file"})
            continue
        data = s3.get_object(Bucket=source["bucket"], Key=key)["Body"].read()
        table, summary = score_object(model, key, data)
        if table is not None:
            out = output_key(key, source["prefix"], target["prefix"])
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            s3.put_object(Bucket=target["bucket"], Key=out, Body=buffer.getvalue())
            summary["output"] = f"s3://{target['bucket']}/{out}"
        files.append(summary)
    return {"files": files}


def _failed_run_results(state: Mapping[str, Any], s3: Any) -> dict[str, str] | None:
    """A failed Map Run's ResultWriter manifest (a caught failure carries no ResultWriterDetails): the one
    ``manifest.json`` under this execution's results prefix (the newest, should there be more)."""
    if not state.get("failure"):
        return None
    output = state["output"]
    found: list[tuple[Any, str]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=output["bucket"], Prefix=f"{output['results']}/"):
        found += [
            (o["LastModified"], o["Key"]) for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json")
        ]
    return {"Bucket": output["bucket"], "Key": max(found)[1]} if found else None


def write_manifest(state: Mapping[str, Any], s3: Any) -> dict[str, Any]:
    """The run's manifest at ``{output}_manifest.json``: rows in, out and rejected (by reason, with examples),
    the pinned version, the duration, every file and every failed batch. Read from the ResultWriter's files
    (``state["map"]``); a failed run (``state["failure"]``) records its error too."""
    from datetime import datetime

    from modeldeck import registry as registry_module

    files: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    details = (state.get("map") or {}).get("ResultWriterDetails") or _failed_run_results(state, s3)
    if details:
        listing = json.loads(s3.get_object(Bucket=details["Bucket"], Key=details["Key"])["Body"].read())
        for status, results in listing.get("ResultFiles", {}).items():
            for result in results:
                body = s3.get_object(Bucket=listing["DestinationBucket"], Key=result["Key"])["Body"].read()
                for child in json.loads(body):
                    if status == "SUCCEEDED":
                        files.extend(json.loads(child["Output"])["files"])
                    else:
                        items = json.loads(child.get("Input") or "{}").get("Items", [])
                        failures.append(
                            {
                                "files": [i.get("Key") for i in items],
                                "error": child.get("Error"),
                                "cause": child.get("Cause"),
                            }
                        )
    totals = merge_summaries([f for f in files if "skipped" not in f])
    finished = registry_module.utcnow()

    def parse(ts: str) -> datetime:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")

    failure = state.get("failure")
    output = state["output"]
    manifest = {
        "status": "FAILED" if failure else "SUCCEEDED",
        "execution": state.get("execution", ""),
        "model": state["model"],
        "version": state["version"],
        "version_source": state["version_source"],
        "input": f"s3://{state['input']['bucket']}/{state['input']['prefix']}",
        "output": f"s3://{output['bucket']}/{output['prefix']}",
        "started": state["started"],
        "finished": finished,
        "duration_seconds": round((parse(finished) - parse(state["started"])).total_seconds(), 3),
        **totals,
        "files": [
            {k: v for k, v in f.items() if k != "rejected"}
            | ({"rows_rejected": sum(e["count"] for e in f["rejected"].values())} if "rejected" in f else {})
            for f in sorted(files, key=lambda f: f["file"])
        ],
        "failures": failures,
    }
    if failure:
        manifest["error"] = {"error": failure.get("Error"), "cause": failure.get("Cause")}
    key = f"{output['prefix']}{MANIFEST}"
    s3.put_object(Bucket=output["bucket"], Key=key, Body=json.dumps(manifest, indent=2).encode())
    summary_keys = ("status", "model", "version", "rows_in", "rows_out", "rows_rejected", "duration_seconds")
    return {**{k: manifest[k] for k in summary_keys}, "manifest": f"s3://{output['bucket']}/{key}"}
