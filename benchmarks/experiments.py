"""Calibration of the sequential statistics (modeldeck.sequential) and of the canary's statistical gate
(modeldeck.release.statistical_gate), by simulation with fixed seeds.

Experiments: A/A experiments peeked after every batch (false winners, against a peeked fixed-horizon test),
the power at the computed sample size, and the SRM check. Canaries: simulated bakes, minute by minute,
judged by the release's own ``statistical_gate`` at each look, as ``sequential_check`` does: the healthy
candidate's false-rollback rate, and for a candidate with twice the champion's error rate, the detection
rate and the virtual minutes to rollback, at several traffic levels.

The simulated canary: requests per minute are Poisson (``rpm`` in all, ``weight`` of them to the
candidate); each request fails with the version's error rate; answered requests have a log-normal latency
(median 3 ms, sigma 0.6) and a prediction score (U², skewed to 0); every answered request is captured. CloudWatch
and Firehose deliver late, so a look at minute ``m`` sees the minutes before ``m - LAG_MINUTES``. The gate
looks every minute of the bake; the alarm check's last look sees the whole bake after the settle wait.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeldeck import sequential as sq
from modeldeck.release import Moments, Policy, VersionSample, settle_seconds, statistical_gate

LAG_MINUTES = 2
LATENCY_MEDIAN_MS = 3.0
LATENCY_SIGMA = 0.6
CANDIDATE, CHAMPION = 2, 1


@dataclass(frozen=True)
class CanaryRuns:
    """What the gate decided over simulated bakes."""

    runs: int
    rolled_back: int  # by any look, the check's included
    in_bake: int  # by a look during the bake
    minutes: tuple[float, ...]  # virtual minutes from the shift to each rollback
    tests: dict[str, int]  # which test rolled back

    @property
    def rate(self) -> float:
        return self.rolled_back / self.runs

    @property
    def bake_rate(self) -> float:
        return self.in_bake / self.runs


def _minute_moments(rng: np.random.Generator, n: np.ndarray, draw) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute sums and sums of squares of ``n[i]`` draws."""
    values = draw(int(n.sum()))
    edges = np.concatenate([[0], np.cumsum(n)])
    sums = np.add.reduceat(values, edges[:-1]) if len(values) else np.zeros(len(n))
    sq_sums = np.add.reduceat(values * values, edges[:-1]) if len(values) else np.zeros(len(n))
    empty = n == 0
    return np.where(empty, 0.0, sums), np.where(empty, 0.0, sq_sums)


def simulate_canaries(
    runs: int,
    *,
    rpm: float,
    weight: float = 0.1,
    champion_error: float = 0.01,
    candidate_error: float = 0.01,
    latency_factor: float = 1.0,
    bake_minutes: int = 10,
    policy: Policy | None = None,
    seed: int = 0,
) -> CanaryRuns:
    """Simulate ``runs`` canary bakes and judge each with ``statistical_gate`` at every look."""
    p = policy or Policy()
    rng = np.random.default_rng(seed)
    settle_minutes = settle_seconds(p.period_seconds) / 60
    rolled = in_bake = 0
    minutes: list[float] = []
    tests: dict[str, int] = {}
    for _ in range(runs):
        per_version = {}
        for version, share, err, factor in (
            (CANDIDATE, weight, candidate_error, latency_factor),
            (CHAMPION, 1 - weight, champion_error, 1.0),
        ):
            requests = rng.poisson(rpm * share, bake_minutes)
            errors = rng.binomial(requests, err)
            answered = requests - errors
            mu = math.log(LATENCY_MEDIAN_MS * factor)
            lat = _minute_moments(rng, answered, lambda k, mu=mu: rng.lognormal(mu, LATENCY_SIGMA, k))
            score = _minute_moments(rng, answered, lambda k: rng.random(k) ** 2)
            per_version[version] = (requests, errors, answered, lat, score)
        looks: list[tuple[float, int]] = [(m, m - LAG_MINUTES) for m in range(1, bake_minutes + 1)]
        looks.append((bake_minutes + settle_minutes, bake_minutes))  # the check, after the settle wait
        for at, seen in looks:
            if seen <= 0:
                continue
            samples = {}
            for version, (requests, errors, answered, lat, score) in per_version.items():
                n = int(answered[:seen].sum())
                samples[version] = VersionSample(
                    float(requests[:seen].sum()),
                    float(errors[:seen].sum()),
                    Moments(n, float(lat[0][:seen].sum()), float(lat[1][:seen].sum())),
                    Moments(n, float(score[0][:seen].sum()), float(score[1][:seen].sum())),
                )
            verdict = statistical_gate(samples, CANDIDATE, CHAMPION, p)
            if verdict["worse"]:
                rolled += 1
                in_bake += at <= bake_minutes
                minutes.append(at)
                worst = min((t for t in verdict["tests"] if t["p_value"] < t["alpha"]), key=lambda t: t["p_value"])
                tests[worst["test"]] = tests.get(worst["test"], 0) + 1
                break
    return CanaryRuns(runs, rolled, in_bake, tuple(minutes), tests)


def peeked_aa(runs: int, looks: int, batch: int, rate: float, seed: int) -> tuple[float, float]:
    """False-winner rates of A/A experiments looked at after every batch: (always valid, fixed-horizon z)."""
    rng = np.random.default_rng(seed)
    sa = rng.binomial(batch, rate, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(batch, rate, size=(runs, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    pooled = (sa + sb) / (2 * n)
    var = np.maximum(pooled * (1 - pooled) * 2 / n, 1e-300)
    p = sq.msprt_p_value((sb - sa) / n, var, sq.DEFAULT_MIXING_SD_PROPORTION**2)
    z = np.abs(sb - sa) / n / np.sqrt(var)
    return float((p < 0.05).any(axis=1).mean()), float((z > 1.959963984540054).any(axis=1).mean())


def power_at(n_units: int, base: float, lift: float, runs: int, looks: int, seed: int) -> float:
    """How often an experiment with a real lift, peeked ``looks`` times up to ``n_units``, finds it."""
    rng = np.random.default_rng(seed)
    batch = math.ceil(n_units / looks)
    sa = rng.binomial(batch, base, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(batch, base + lift, size=(runs, looks)).cumsum(axis=1)
    n = batch * np.arange(1, looks + 1)
    pooled = (sa + sb) / (2 * n)
    p = sq.msprt_p_value((sb - sa) / n, pooled * (1 - pooled) * 2 / n, lift**2)
    return float(((p < 0.05) & (sb > sa)).any(axis=1).mean())


def srm_rate(runs: int, units: int, share: float, seed: int) -> float:
    """How often SRM flags a 50/50 experiment whose first variant really gets ``share`` of the units."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(units, share, size=runs)
    return float(np.mean([sq.srm([int(x), units - int(x)], [0.5, 0.5]).mismatch for x in a]))


def _fmt_minutes(m: tuple[float, ...]) -> str:
    if not m:
        return "–"
    return f"{np.median(m):.0f} (p90 {np.quantile(m, 0.9):.0f})"


def run() -> str:
    started = time.perf_counter()
    lines = ["## Experiments and the canary's statistical gate", ""]
    lines += [
        "Simulations with fixed seeds (`benchmarks/experiments.py`); α = 0.05. The sequential test is the "
        "mSPRT of `modeldeck.sequential` (always-valid p-values); the canary runs are judged by "
        "`modeldeck.release.statistical_gate`, the code each `SequentialCheck` look runs.",
        "",
        "### Experiments: calibration",
        "",
        "| Property | Runs | Result |",
        "|---|---|---|",
    ]
    aa, fixed = peeked_aa(20000, 100, 200, 0.10, seed=1)
    lines.append(
        f"| A/A, 10% conversion, peeked after every 200 units per arm (100 looks) — false winners, always-valid "
        f"test | 20,000 | {aa:.2%} |"
    )
    lines.append(f"| the same, a fixed-horizon z test peeked the same way | 20,000 | {fixed:.2%} |")
    n_seq = sq.sample_size_proportions(0.10, 0.02)
    n_fixed = sq.fixed_sample_size_proportions(0.10, 0.02)
    pw = power_at(n_seq, 0.10, 0.02, 10000, 50, seed=2)
    lines.append(
        f"| 10% → 12%, power 0.8: sample size per variant, sequential (fixed-horizon) | – | {n_seq:,} ({n_fixed:,}) |"
    )
    lines.append(f"| 10% → 12% detected by {n_seq:,} units per variant, peeked 50 times | 10,000 | {pw:.1%} |")
    lines.append(
        f"| SRM flags 52/48 of 20,000 units (50/50 planned) | 2,000 | {srm_rate(2000, 20000, 0.52, seed=3):.1%} |"
    )
    lines.append(f"| SRM flags 50.3/49.7 of 20,000 units | 2,000 | {srm_rate(2000, 20000, 0.503, seed=4):.1%} |")
    lines.append(
        f"| SRM flags a healthy 50/50 split of 20,000 units | 2,000 | {srm_rate(2000, 20000, 0.5, seed=5):.2%} |"
    )
    lines += [
        "",
        "### Canary: the statistical gate",
        "",
        "Production defaults: 10% canary, 10-minute bake, a look every minute, metrics seen "
        f"{LAG_MINUTES} minutes late, the last look (the alarm check's) after the settle wait, at minute "
        f"{10 + settle_seconds(60) / 60:g}. Champion error rate 1%. *Rolled back* counts any look; *in the bake* "
        "only the looks before the bake ends. Minutes are virtual, from the shift.",
        "",
        "| Candidate | Traffic (requests/min) | Runs | Rolled back | In the bake | Minutes to rollback, median (p90) |",
        "|---|---|---|---|---|---|",
    ]
    scenarios: list[tuple[str, dict[str, Any], tuple[int, ...], int]] = [
        ("healthy (same errors, latency, scores)", {}, (120, 1200, 12000), 1000),
        ("2× error rate (1% → 2%)", {"candidate_error": 0.02}, (120, 1200, 6000, 12000, 30000), 300),
        ("all requests fail", {"candidate_error": 1.0}, (120,), 300),
        ("1.5× slower (mean latency)", {"latency_factor": 1.5}, (120, 1200), 300),
    ]
    for label, kwargs, traffic, runs in scenarios:
        for i, rpm in enumerate(traffic):
            r = simulate_canaries(runs, rpm=rpm, seed=100 + i, **kwargs)
            lines.append(
                f"| {label} | {rpm:,} | {runs:,} | {r.rate:.1%} | {r.bake_rate:.1%} | {_fmt_minutes(r.minutes)} |"
            )
    lines += [
        "",
        f"Section measured in {time.perf_counter() - started:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
