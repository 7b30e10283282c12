"""Drift benchmark: the drift job's compute for 100k rows x 30 features (goal < 1 s), and end to end.

Measured three ways: the statistics alone from arrays (``stats.compare_window``); plus parsing the
window's capture records from JSON lines and stacking them into columns; and the whole
``drift.evaluate_window`` against moto's S3 (listing, reading, de-duplicating).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from modeldeck import drift, stats
from modeldeck.capture import encode_batch, iter_lines, partition_key
from modeldeck.schema import Feature, FeatureSchema

N_NUMERIC, N_CATEGORICAL = 27, 3
BASELINE_ROWS = 20_000
ROWS_PER_REQUEST = 100
END = datetime(2026, 11, 23, 8, tzinfo=UTC)


def _data(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    cols: dict[str, np.ndarray] = {
        f"x{i}": (rng.normal(shift if i == 0 else 0.0, 1.0, n) * (i + 1)).astype(np.float32) for i in range(N_NUMERIC)
    }
    for j in range(N_CATEGORICAL):
        cols[f"c{j}"] = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), size=n, p=[0.4, 0.3, 0.2, 0.1])
    labels = np.where(rng.random(n) < 0.63, "benign", "malignant")
    return cols, labels


def _schema() -> FeatureSchema:
    return FeatureSchema(
        tuple(
            [Feature(f"x{i}", "numeric") for i in range(N_NUMERIC)]
            + [Feature(f"c{j}", "categorical") for j in range(N_CATEGORICAL)]
        )
    )


def _records(cols: dict[str, np.ndarray], labels: np.ndarray) -> list[dict[str, Any]]:
    n = labels.size
    out = []
    for k, lo in enumerate(range(0, n, ROWS_PER_REQUEST)):
        hi = min(lo + ROWS_PER_REQUEST, n)
        ts = END - timedelta(hours=1) + timedelta(seconds=k * 3600 / (n / ROWS_PER_REQUEST))
        out.append(
            {
                "kind": "capture",
                "model": "bench",
                "model_version": "1",
                "function_version": "1",
                "id": f"r{k}",
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "rows": hi - lo,
                "shadow": False,
                "features": {name: col[lo:hi].tolist() for name, col in cols.items()},
                "outputs": {"label": labels[lo:hi].tolist()},
                "latency_ms": 0.5,
            }
        )
    return out


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> str:
    rng = np.random.default_rng(0)
    base_cols, base_labels = _data(rng, BASELINE_ROWS)
    baseline = stats.build_baseline(_schema(), base_cols, base_labels, None, ["benign", "malignant"])
    rows = []
    for n in (1_000, 10_000, 100_000):
        cols, labels = _data(rng, n, shift=0.3)
        seconds = _best(lambda cols=cols, labels=labels: stats.compare_window(baseline, cols, labels))
        method = "exact" if n <= stats.KS_EXACT_MAX_N else "asymptotic"
        rows.append(f"| statistics from arrays | {n:,} | {method} | {seconds * 1000:,.0f} ms |")

    cols, labels = _data(rng, 100_000, shift=0.3)
    records = _records(cols, labels)
    body = encode_batch(records)

    def parse_and_compare() -> None:
        parsed = list(iter_lines(body))
        stacked = drift._columns(parsed, baseline["features"])
        stats.compare_window(baseline, stacked, drift._predictions(parsed))

    seconds = _best(parse_and_compare)
    rows.append(
        f"| + parse {len(body) / 2**20:,.0f} MiB of JSON lines, stack columns | 100,000 | asymptotic | "
        f"{seconds * 1000:,.0f} ms |"
    )

    from modeldeck.localcloud import local_cloud
    from modeldeck.registry import BASELINE, Registry

    with local_cloud() as cloud:
        s3 = cloud.client("s3")
        s3.put_object(
            Bucket=cloud.bucket,
            Key=Registry.key("bench", 1, BASELINE),
            Body=__import__("json").dumps(baseline).encode(),
        )
        for k in range(0, len(records), 100):  # Firehose-sized objects of 100 requests
            part = records[k : k + 100]
            prefix = partition_key("capture", "bench", END - timedelta(hours=1))
            s3.put_object(Bucket=cloud.bucket, Key=f"{prefix}batch-{k:06d}.jsonl", Body=encode_batch(part))
        seconds = _best(
            lambda: drift.evaluate_window(
                s3,
                cloud.bucket,
                "bench",
                END - timedelta(hours=1),
                END,
                stats.DriftThresholds(),
                feedback_lookback=timedelta(0),
            ),
            repeat=2,
        )
    rows.append(
        f"| + read from S3 (moto, {len(records) // 100} objects), de-duplicate | 100,000 | asymptotic | "
        f"{seconds * 1000:,.0f} ms |"
    )
    return "\n".join(
        [
            "## Drift job",
            "",
            f"One window against a {BASELINE_ROWS:,}-row baseline (KS sample of {stats.KS_SAMPLE}), "
            f"{N_NUMERIC} numeric + {N_CATEGORICAL} categorical features, binary predictions; best of 3, one "
            'process. The KS p-value follows scipy\'s `method="auto"`: exact lattice-path counts while both '
            "samples have at most 10,000 values, the asymptotic distribution beyond.",
            "",
            "| what | rows | KS p-value | time |",
            "|---|---:|---|---:|",
            *rows,
            "",
        ]
    )
