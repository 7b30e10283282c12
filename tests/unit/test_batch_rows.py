"""Batch scoring's row handling (modeldeck.batch): every row either scored or rejected with its reason, by the
same schema validation as the API; S3 objects of each format; the manifest's totals; the emulator's batching."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modeldeck.batch import Rejections, merge_summaries, output_key, reason_of, score_object, valid_rows
from modeldeck.onnxmodel import OnnxModel
from modeldeck.schema import Feature, FeatureSchema
from modeldeck.serving import RecordsFastPath
from tests.fixtures.inference import ROW

SCHEMA = FeatureSchema(
    features=(
        Feature("x", "numeric", min=0.0, max=10.0, allow_missing=False),
        Feature("c", "categorical", values=("a", "b")),
    )
)


def test_only_the_invalid_rows_are_rejected_each_with_its_file_row_and_reason() -> None:
    # Given 1000 rows with three bad ones far apart
    x = np.full(1000, 5.0, dtype=object)
    c = np.array(["a"] * 1000, dtype=object)
    x[3], x[500], c[999] = "five", 11.0, "z"
    rejections = Rejections({})
    # When validated (file rows 100..1099: a later chunk)
    keep = valid_rows(SCHEMA, {"x": x, "c": c}, 1000, rejections, rows=np.arange(100, 1100))
    # Then exactly those rows are out, grouped by reason, with their file row numbers
    assert np.flatnonzero(~keep).tolist() == [3, 500, 999]
    assert {k: v["count"] for k, v in rejections.reasons.items()} == {
        "'x' must be a number, got string": 1,
        "'x' is outside the allowed range [0.0, 10.0]": 1,
        "'c' is not one of 'a', 'b'": 1,
    }
    assert rejections.reasons["'x' is outside the allowed range [0.0, 10.0]"]["examples"] == [
        {"row": 600, "error": "row 600: 'x' = 11 is outside the allowed range [0.0, 10.0]"}
    ]


def test_a_reason_keeps_its_first_examples_and_counts_the_rest() -> None:
    rejections = Rejections({})
    for row in range(12):
        rejections.add("r", row, f"row {row}")
    assert rejections.count == 12 and [e["row"] for e in rejections.reasons["r"]["examples"]] == [0, 1, 2, 3, 4]
    assert reason_of("'x' = 7 is outside the allowed range [0, 5]") == "'x' is outside the allowed range [0, 5]"


def test_outputs_mirror_the_input_tree_and_never_collide() -> None:
    assert output_key("in/a/b.csv", "in/", "out/") == "out/a/b.csv.parquet"
    assert output_key("in/a/b.jsonl", "in/", "out/") == "out/a/b.jsonl.parquet"
    assert output_key("in/b.parquet", "in/", "out/") == "out/b.parquet"


def _csv(rows: list[dict[str, Any]]) -> bytes:
    names = list(rows[0])
    return ("\n".join([",".join(names)] + [",".join(str(r[n]) for n in names) for r in rows]) + "\n").encode()


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_each_format_scores_exactly_like_the_api_for_the_same_rows(trained_demo: Any, kind: str) -> None:
    # Given the demo model and the same rows as a CSV, JSON Lines or Parquet object
    model = OnnxModel(trained_demo.card, trained_demo.onnx)
    rng = np.random.default_rng(7)
    rows = [{k: float(np.float32(v * rng.uniform(0.8, 1.2))) for k, v in ROW.items()} for _ in range(50)]
    body = {"csv": _csv, "parquet": _parquet}.get(kind, lambda r: "".join(json.dumps(x) + "\n" for x in r).encode())(
        rows
    )
    # When scored as a batch object, and as the API's :predict records
    table, summary = score_object(model, f"in/part.{kind}", body)
    columns = RecordsFastPath(trained_demo.card.schema).columns(rows, 1000)
    online = model.predict(
        columns if columns is not None else trained_demo.card.schema.columns_from_records(rows, 1000)
    )
    # Then every row is scored, with identical labels and probabilities
    assert summary["rows_in"] == summary["rows_out"] == 50 and summary["rejected"] == {}
    out = table.to_pydict()
    assert out["row"] == list(range(50))
    assert out["prediction"] == online.labels.tolist()
    assert out["probability_malignant"] == online.probabilities[:, 1].tolist()


def test_totals_sum_the_files_and_keep_examples_naming_their_file() -> None:
    files = [
        {
            "file": "a.csv",
            "rows_in": 10,
            "rows_out": 9,
            "rejected": {"r": {"count": 1, "examples": [{"row": 2, "error": "e"}]}},
        },
        {"file": "b.csv", "rows_in": 5, "rows_out": 5, "rejected": {}},
    ]
    totals = merge_summaries(files)
    assert (totals["rows_in"], totals["rows_out"], totals["rows_rejected"]) == (15, 14, 1)
    assert totals["rejected"]["r"]["examples"] == [{"file": "a.csv", "row": 2, "error": "e"}]


def test_the_emulated_item_batcher_follows_both_limits_and_the_threshold_its_document_sets() -> None:
    from types import SimpleNamespace

    from modeldeck.localcloud.stepfunctions import DistributedFields

    env = SimpleNamespace(states=SimpleNamespace(get_input=lambda: {"m": "x"}))
    items = [{"Key": f"k{i:03d}"} for i in range(25)]
    # MaxItemsPerBatch: 10, 10, 5 items, each with the BatchInput resolved against the state's input
    by_count = DistributedFields("S", {"ItemBatcher": {"MaxItemsPerBatch": 10, "BatchInput": {"m.$": "$.m"}}})
    batches = by_count.batches(items, env)
    assert [len(b["Items"]) for b in batches] == [10, 10, 5] and batches[0]["BatchInput"] == {"m": "x"}
    # MaxInputBytesPerBatch: no batch's JSON is larger
    by_bytes = DistributedFields("S", {"ItemBatcher": {"MaxInputBytesPerBatch": 100}})
    sized = by_bytes.batches(items, env)
    assert (
        all(len(json.dumps(b, separators=(",", ":"))) <= 100 for b in sized)
        and sum(len(b["Items"]) for b in sized) == 25
    )
    # ToleratedFailurePercentage: 10 % of 25 items tolerates 2 failed items, not 3; the default tolerates none
    tolerant = DistributedFields("S", {"ToleratedFailurePercentage": 10})
    assert not tolerant.exceeded(2, 25) and tolerant.exceeded(3, 25)
    assert DistributedFields("S", {}).exceeded(1, 25)
