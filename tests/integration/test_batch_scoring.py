"""Batch scoring on the local cloud: the deployed batch state machine (the template's ASL, with ItemBatcher and
ResultWriter) over CSV, JSON Lines and Parquet files; online and batch scores agree exactly; rejected rows are
counted with their reasons; a batch failing beyond the tolerated threshold fails the execution."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modeldeck.gateway import Gateway
from tests.fixtures.gateway import deployed_api
from tests.fixtures.inference import MODEL, ROW

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
KEY = "test-key"
HEADERS = {"content-type": ["application/json"], "x-api-key": [KEY]}


@pytest.fixture(scope="module")
def deployed(trained_demo: Any) -> Iterator[Any]:
    """Given the app's templates deployed (the batch stack with them) and the demo model's v1 released."""
    with deployed_api(trained_demo) as cloud:
        yield cloud


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` valid rows around the demo's typical row (values inside the schema's ranges)."""
    rng = np.random.default_rng(seed)
    return [{k: float(np.float32(v * rng.uniform(0.7, 1.3))) for k, v in ROW.items()} for _ in range(n)]


def csv_bytes(records: list[dict[str, Any]]) -> bytes:
    names = list(records[0])
    lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in records]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    return buffer.getvalue()


def run(cloud: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Start the deployed batch state machine and wait for its end (moto runs it on its own threads)."""
    sfn = cloud.client("stepfunctions")
    arn = cloud.deployer.outputs["BatchStateMachineArn"]
    name = f"test-{uuid.uuid4().hex[:12]}"
    execution = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(request))["executionArn"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError("the batch execution did not finish")


def read_json(cloud: Any, key: str) -> Any:
    return json.loads(cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read())


def test_a_prefix_of_csv_jsonl_and_parquet_is_scored_in_declared_batches_like_the_online_api(deployed: Any) -> None:
    # Given 12 input files (4 CSV, 4 JSON Lines, 4 Parquet, 5 rows each) and a text file, with three bad rows
    s3, bucket = deployed.client("s3"), deployed.bucket
    sent: dict[str, list[dict[str, Any]]] = {}
    for i in range(4):
        sent[f"batch/input/run/part-{i}.csv"] = rows(5, i)
        sent[f"batch/input/run/part-{i}.jsonl"] = rows(5, 10 + i)
        sent[f"batch/input/run/nested/part-{i}.parquet"] = rows(5, 20 + i)
    bodies = {k: csv_bytes(v) if k.endswith(".csv") else parquet_bytes(v) for k, v in sent.items()}
    for key, records in sent.items():
        if key.endswith(".jsonl"):
            bodies[key] = "".join(json.dumps(r) + "\n" for r in records).encode()
    # a number that is text (CSV row 2), a value above the schema's maximum (JSONL row 1), a line that is no object
    bodies["batch/input/run/part-0.csv"] = bodies["batch/input/run/part-0.csv"].replace(
        str(sent["batch/input/run/part-0.csv"][2]["mean_radius"]).encode(), b"twelve", 1
    )
    bad = {**sent["batch/input/run/part-1.jsonl"][1], "mean_smoothness": 7.5}
    lines = bodies["batch/input/run/part-1.jsonl"].decode().splitlines()
    lines[1] = json.dumps(bad)
    bodies["batch/input/run/part-1.jsonl"] = ("\n".join(lines) + "\n[1, 2]\n").encode()
    bodies["batch/input/run/README.txt"] = b"not data"
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    # When the batch state machine scores the prefix
    described = run(
        deployed,
        {"model": MODEL, "input": f"s3://{bucket}/batch/input/run/", "output": f"s3://{bucket}/batch/output/run/"},
    )

    # Then it succeeds, pinned to v1, and its manifest counts rows in, out and rejected, by reason
    assert described["status"] == "SUCCEEDED", described
    manifest = read_json(deployed, "batch/output/run/_manifest.json")
    assert manifest["status"] == "SUCCEEDED" and manifest["version"] == 1
    assert manifest["execution"] == described["executionArn"].rsplit(":", 1)[-1]
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (61, 58, 3)
    reasons = manifest["rejected"]
    assert reasons["'mean_radius' must be a number, got string"]["count"] == 1
    assert reasons["the line is not a JSON object"]["examples"][0]["row"] == 5
    assert reasons["'mean_smoothness' is outside the allowed range [0.0, 1.0]"]["examples"] == [
        {
            "file": "batch/input/run/part-1.jsonl",
            "row": 1,
            "error": "row 1: 'mean_smoothness' = 7.5 is outside the allowed range [0.0, 1.0]",
        }
    ]
    assert sum(e["count"] for e in reasons.values()) == 3
    assert [f["file"] for f in manifest["files"] if "skipped" in f] == ["batch/input/run/README.txt"]
    assert manifest["failures"] == [] and manifest["duration_seconds"] >= 0

    # And the ItemBatcher made batches of MaxItemsPerBatch (10) objects: 13 objects in two child executions
    (asl,) = [
        json.loads(d["definition"])
        for d in [
            deployed.client("stepfunctions").describe_state_machine(
                stateMachineArn=deployed.deployer.outputs["BatchStateMachineArn"]
            )
        ]
    ]
    assert asl["States"]["Score"]["ItemBatcher"]["MaxItemsPerBatch"] == 10
    result_manifest = read_json(deployed, described["output"] and _results_manifest(deployed))
    (succeeded,) = result_manifest["ResultFiles"]["SUCCEEDED"]
    children = read_json(deployed, succeeded["Key"])
    assert sorted(len(json.loads(c["Input"])["Items"]) for c in children) == [3, 10]

    # And every valid row's prediction and probabilities equal the online API's for the same row and version
    gateway = Gateway(deployed, api_key=KEY)
    for key, records in sent.items():
        out_key = key.replace("batch/input/", "batch/output/") + ("" if key.endswith(".parquet") else ".parquet")
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=out_key)["Body"].read())).to_pylist()
        scored = [records[r["row"]] for r in table]
        reply = gateway.handle(
            "POST", f"/v1/models/{MODEL}:predict", HEADERS, json.dumps({"instances": scored}).encode()
        )
        online = json.loads(reply.body)
        assert reply.status == 200 and online["model_version"] == "1"
        assert [r["prediction"] for r in table] == online["predictions"]
        assert [[r["probability_benign"], r["probability_malignant"]] for r in table] == online["probabilities"]


def _results_manifest(cloud: Any) -> str:
    listed = cloud.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix="batch/output/run/_results/")
    (key,) = [o["Key"] for o in listed["Contents"] if o["Key"].endswith("/manifest.json")]
    return key


def test_a_batch_failing_beyond_the_tolerated_threshold_fails_the_execution_with_a_manifest(deployed: Any) -> None:
    # Given a prefix whose only file is not Parquet at all (the template tolerates no failed item)
    s3, bucket = deployed.client("s3"), deployed.bucket
    s3.put_object(Bucket=bucket, Key="batch/input/broken/a.parquet", Body=b"not parquet")
    s3.put_object(Bucket=bucket, Key="batch/input/broken/b.csv", Body=csv_bytes(rows(3, 99)))
    # When it is scored
    described = run(
        deployed,
        {
            "model": MODEL,
            "input": f"s3://{bucket}/batch/input/broken/",
            "output": f"s3://{bucket}/batch/output/broken/",
        },
    )
    # Then the execution fails with the Map Run's error, and the manifest says why and which files
    assert described["status"] == "FAILED"
    assert described["error"] == "BatchFailed" and "tolerated failure threshold was exceeded" in described["cause"]
    manifest = read_json(deployed, "batch/output/broken/_manifest.json")
    assert manifest["status"] == "FAILED"
    assert manifest["error"]["error"] == "States.ExceedToleratedFailureThreshold"
    (failure,) = manifest["failures"]
    assert failure["files"] == ["batch/input/broken/a.parquet", "batch/input/broken/b.csv"]
    assert "not a readable PARQUET file" in failure["cause"]


def test_a_request_outside_the_batch_locations_is_refused_before_any_work(deployed: Any) -> None:
    # When the output location is outside the configured output prefix (the role could not write there)
    bucket = deployed.bucket
    described = run(
        deployed, {"model": MODEL, "input": f"s3://{bucket}/batch/input/run/", "output": f"s3://{bucket}/models/x/"}
    )
    # Then the plan refuses it, naming the location, and nothing is written
    assert described["status"] == "FAILED" and described["error"] == "BatchError"
    assert "outside the batch's output location" in described["cause"]


def test_the_cli_runs_an_s3_prefix_through_the_batch_and_prints_the_manifest(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeck.cli import build_parser
    from modeldeck.cli.common import Context
    from modeldeck.cli.serve import cmd_predict
    from modeldeck.deployment import Deployment
    from modeldeck.errors import ModeldeckError

    # Given a prefix with one CSV file, and the command line `predict MODEL --input s3://… --output s3://… --json`
    bucket = deployed.bucket
    deployed.client("s3").put_object(Bucket=bucket, Key="batch/input/cli/a.csv", Body=csv_bytes(rows(4, 5)))
    argv = ["--json", "predict", MODEL, "--input", f"s3://{bucket}/batch/input/cli/", "--output"]
    args = build_parser().parse_args([*argv, f"s3://{bucket}/batch/output/cli/"])
    ctx = Context(args, deployed.client, bucket, Deployment(deployed.client, deployed.deployer.outputs, deployed))
    # When it runs (on this cloud, as `modeldeck predict` does on the state directory's)
    code = cmd_predict(ctx)
    # Then it followed the execution to its end and printed this run's manifest
    manifest = json.loads(capsys.readouterr().out)
    assert code == 0 and manifest["status"] == "SUCCEEDED" and manifest["rows_out"] == 4
    assert manifest["output"] == f"s3://{bucket}/batch/output/cli/"
    # And a request the plan refuses is one error naming the problem, not a manifest of an older run
    args = build_parser().parse_args([*argv, f"s3://{bucket}/models/"])
    with pytest.raises(ModeldeckError, match="outside the batch's output location"):
        cmd_predict(Context(args, deployed.client, bucket, ctx.deployment))
