"""Batch scoring: 1,000,000 rows × 10 features through the local cloud's Distributed Map (the deployed batch
state machine: listObjectsV2 ItemReader, ItemBatcher, the batch Lambda per batch, ResultWriter, manifest),
against `modeldeck predict` on one local file in one process, side by side; and, on paper, 1 billion rows on
AWS at the default MaxConcurrency with the prices listed below."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The app synthesized for the local cloud (stub bundles), as the load section uses it.
ASSEMBLY = Path("build/bench-assembly")
ROWS = 1_000_000
FILES = 100  # 10,000 rows each: ten batches of MaxItemsPerBatch (10) files
MODEL = "breast-cancer"
# Public list prices, us-east-1, as published on the AWS pricing pages (not re-checked here: no network).
# Lambda (x86_64): https://aws.amazon.com/lambda/pricing/ ; Step Functions Standard:
# https://aws.amazon.com/step-functions/pricing/ ; S3 Standard requests: https://aws.amazon.com/s3/pricing/
PRICES = {
    "lambda_gb_second": 0.0000166667,
    "lambda_request": 0.20 / 1e6,
    "state_transition": 0.025 / 1000,
    "s3_get": 0.0004 / 1000,
    "s3_put_list": 0.005 / 1000,
}
PRICES_AS_OF = "the AWS pricing pages as of 2025 (list prices, us-east-1, no free tier)"
ONE_BILLION = 1_000_000_000
PAPER_FILE_ROWS = 1_000_000  # 1,000 Parquet files of 1M rows for the paper estimate


def _rows(n: int, seed: int) -> dict[str, np.ndarray]:
    from tests.fixtures.inference import ROW

    rng = np.random.default_rng(seed)
    return {k: (v * rng.uniform(0.7, 1.3, n)).astype(np.float32) for k, v in ROW.items()}


def _parquet(columns: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def _train() -> Any:
    from modeldeck.spec import load_spec
    from training.datasets import load_dataset
    from training.train import train_model

    spec = load_spec(Path("models") / f"{MODEL}.toml")
    return train_model(spec, load_dataset(spec))


def _local_cloud_run(trained: Any, files: list[bytes]) -> dict[str, Any]:
    from modeldeck.localcloud import assembly_templates, local_cloud
    from modeldeck.registry import BASELINE, HOLDOUT, Registry

    templates = assembly_templates(ASSEMBLY)
    with local_cloud(templates=templates) as cloud:
        Registry(cloud.client("s3"), cloud.bucket).register(
            trained.card, trained.onnx, {BASELINE: trained.baseline, HOLDOUT: trained.holdout}
        )
        s3, bucket = cloud.client("s3"), cloud.bucket
        for i, body in enumerate(files):
            s3.put_object(Bucket=bucket, Key=f"batch/input/bench/part-{i:04d}.parquet", Body=body)
        sfn = cloud.client("stepfunctions")
        request = {
            "model": MODEL,
            "input": f"s3://{bucket}/batch/input/bench/",
            "output": f"s3://{bucket}/batch/output/bench/",
        }
        started = time.perf_counter()
        execution = sfn.start_execution(
            stateMachineArn=cloud.deployer.outputs["BatchStateMachineArn"],
            name=f"bench-{uuid.uuid4().hex[:8]}",
            input=json.dumps(request),
        )["executionArn"]
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        assert described["status"] == "SUCCEEDED", described
        manifest = json.loads(s3.get_object(Bucket=bucket, Key="batch/output/bench/_manifest.json")["Body"].read())
        return {"seconds": seconds, "manifest": manifest}


def _one_process(trained: Any, columns: dict[str, np.ndarray]) -> float:
    """`modeldeck predict MODEL --input file.parquet --output out.parquet`: its code path (score_file with the
    CLI's session of os.cpu_count() threads), timed without the cloud's start."""
    from modeldeck.batch import score_file
    from modeldeck.onnxmodel import OnnxModel

    with tempfile.TemporaryDirectory() as tmp:
        source, output = Path(tmp) / "in.parquet", Path(tmp) / "out.parquet"
        pq.write_table(pa.table(columns), source)
        model = OnnxModel(trained.card, trained.onnx, threads=os.cpu_count() or 1)
        started = time.perf_counter()
        result = score_file(model, source, output)
        seconds = time.perf_counter() - started
        assert result.rows == ROWS
    return seconds


def _lambda_rate(trained: Any, body: bytes, rows: int) -> float:
    """Rows per second of the batch Lambda's own work on one file (read, validate, score, write), one thread."""
    from modeldeck.batch import score_object
    from modeldeck.onnxmodel import OnnxModel

    model = OnnxModel(trained.card, trained.onnx)
    started = time.perf_counter()
    table, _ = score_object(model, "part.parquet", body)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return rows / (time.perf_counter() - started)


def paper(rate: float, max_concurrency: int = 100, files_per_batch: int = 10, memory_mb: int = 3008) -> dict[str, Any]:
    """1 billion rows on AWS: 1,000 files of 1M rows, batches of ``files_per_batch`` files, at most
    ``max_concurrency`` children at once, each Lambda scoring at ``rate`` rows/s (measured here, one thread)."""
    files = ONE_BILLION // PAPER_FILE_ROWS
    children = -(-files // files_per_batch)
    child_seconds = files_per_batch * PAPER_FILE_ROWS / rate
    waves = -(-children // max_concurrency)
    gb_seconds = children * child_seconds * memory_mb / 1024
    # Transitions: parent ~8 (start, Plan, Map, Manifest, Done, end); each child 3 (start, ScoreBatch, end).
    transitions = 8 + 3 * children
    cost = {
        "Lambda compute": gb_seconds * PRICES["lambda_gb_second"],
        "Lambda requests": (children + 2) * PRICES["lambda_request"],
        "Step Functions transitions": transitions * PRICES["state_transition"],
        "S3 requests": files * (PRICES["s3_get"] + PRICES["s3_put_list"]) + 2 * children * PRICES["s3_put_list"],
    }
    return {
        "files": files,
        "children": children,
        "child_seconds": child_seconds,
        "wall_seconds": waves * child_seconds,
        "gb_seconds": gb_seconds,
        "transitions": transitions,
        "cost": cost,
        "total": sum(cost.values()),
        "fits_timeout": child_seconds < 15 * 60,
    }


def _bundle_sizes() -> dict[str, float]:
    """The batch function as a zip bundle would be (MiB unzipped, stripped), per architecture."""
    from infra.bundling import REPO_ROOT, BundleSpec, build_bundle, tree_size

    sizes = {}
    for arch in ("x86_64", "arm64"):
        spec = BundleSpec(
            name="batch",
            requirements=REPO_ROOT / "lambdas/batch/requirements.txt",
            packages=("lambdas/batch",),
            architecture=arch,
        )
        sizes[arch] = tree_size(build_bundle(spec)) / 2**20
    return sizes


def run() -> str:
    sizes = _bundle_sizes()
    trained = _train()
    per_file = ROWS // FILES
    parts = [_rows(per_file, i) for i in range(FILES)]
    bodies = [_parquet(p) for p in parts]
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    local = _one_process(trained, columns)
    cloud = _local_cloud_run(trained, bodies)
    manifest = cloud["manifest"]
    assert manifest["rows_out"] == ROWS, manifest
    big = _rows(PAPER_FILE_ROWS, 999)
    rate = _lambda_rate(trained, _parquet(big), PAPER_FILE_ROWS)
    p = paper(rate)
    lines = [
        "## Batch scoring (Distributed Map)",
        "",
        f"{ROWS:,} rows × 10 features (the demo model's raw inputs), in {FILES} Parquet files of {per_file:,} rows, "
        "side by side in one run. The local cloud runs the deployed batch state machine (the template's ASL: "
        "listObjectsV2 ItemReader, ItemBatcher of 10 files, MaxConcurrency 100, ResultWriter, manifest), each "
        "child execution invoking the batch Lambda in-process, as its role, on the virtual clock. "
        "`modeldeck predict` scores the same rows from one Parquet file in one process (its session uses every "
        "core). End to end: from StartExecution to SUCCEEDED; from the file's open to its output's close.",
        "",
        "| path | rows | seconds | rows/s |",
        "|---|---|---|---|",
        f"| local cloud: batch state machine ({-(-FILES // 10)} child executions) | {manifest['rows_out']:,} | "
        f"{cloud['seconds']:.1f} | {ROWS / cloud['seconds']:,.0f} |",
        f"| `modeldeck predict` on one local file, one process | {ROWS:,} | {local:.1f} | {ROWS / local:,.0f} |",
        "",
        f"The local cloud took {cloud['seconds'] / local:.1f}× the single process's time. The two do different "
        "work per row: `modeldeck predict` writes each row's input columns next to its scores (through pandas), "
        "the batch writes `row`, `prediction` and the probabilities only. The local cloud adds S3 (moto) reads and "
        "writes, Lambda invocations and Step Functions bookkeeping, and its children's invocations take turns in "
        "the function's one local execution environment, where AWS gives each child its own Lambda.",
        "",
        "### 1 billion rows on AWS, on paper",
        "",
        f"One batch Lambda scores {rate:,.0f} rows/s here (read Parquet, validate, score, write Parquet; one "
        f"intra-op thread, as the function runs it), measured on one file of {PAPER_FILE_ROWS:,} rows. Assuming a "
        "Lambda vCPU like one of these cores, 1 billion rows in "
        f"{p['files']:,} files of {PAPER_FILE_ROWS:,} rows, batches of 10 files, the default MaxConcurrency 100, "
        "3008 MB functions:",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| child executions (batches) | {p['children']:,} |",
        f"| one child's Lambda time (10 files) | {p['child_seconds']:,.0f} s "
        f"({'within' if p['fits_timeout'] else 'OVER'} Lambda's 15 minutes) |",
        f"| wall time (⌈{p['children']} / 100⌉ waves) | {p['wall_seconds'] / 60:,.1f} min, plus cold starts |",
        f"| Lambda GB-seconds | {p['gb_seconds']:,.0f} |",
        f"| state transitions | {p['transitions']:,} |",
    ]
    lines += [f"| cost: {name} | ${value:,.4f} |" for name, value in p["cost"].items()]
    lines += [
        f"| **total** | **${p['total']:,.2f}** |",
        "",
        f"Prices: Lambda x86_64 ${PRICES['lambda_gb_second']:.10f} per GB-second and $0.20 per million requests; "
        "Step Functions Standard $0.025 per 1,000 state transitions (a Distributed Map's child executions are "
        "Standard executions, billed the same way); S3 $0.0004 per 1,000 GETs and $0.005 per 1,000 PUT/LIST; "
        f"from {PRICES_AS_OF}. Data transfer within a region and storage are left out. The cost is almost all "
        "Lambda compute: it scales with rows / rate × memory, not with MaxConcurrency, which sets the wall time.",
        "",
        "Packaging, measured with `infra/bundling.py` (stripped, Python 3.12 manylinux_2_28 wheels of "
        f"`lambdas/batch/requirements.txt`): onnxruntime + numpy + pyarrow unzip to {sizes['x86_64']:.1f} MiB for "
        f"x86_64 and {sizes['arm64']:.1f} MiB for arm64, against a zip Lambda's 250 MiB; the batch function is "
        "therefore a container image (`infra/docker/batch.Dockerfile`, 10 GB limit).",
    ]
    return "\n".join(lines) + "\n"
