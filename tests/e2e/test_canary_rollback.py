"""The canary end to end, on the local cloud with production defaults (a 10-minute bake, 60 s periods, the
settle wait, all on the virtual clock): versions trained and registered by the training state machine,
released by the release state machine, served by the real inference handler behind the alias ``live``.

Given steady client traffic through the alias during each release,
- a healthy candidate is promoted (no false rollback);
- a candidate that answers every request with a server error (its artifact can no longer be read when its
  execution environment starts, so the handler answers 503 to each request: no Latency and no
  PredictionScore at all) is rolled back during the bake by the statistical gate's error-rate test, with
  the champion and the alias untouched.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modeldeck import release
from modeldeck.cli import build_parser
from modeldeck.cli.common import Context, open_context
from modeldeck.cli.models import run_training
from modeldeck.cli.release import run_release
from modeldeck.gateway import proxy_event
from tests.conftest import DEMO_SPEC
from tests.fixtures.inference import ROW

pytestmark = pytest.mark.e2e
MODEL = "breast-cancer"
REQUESTS_PER_10_SECONDS = 20  # 120 a minute: the 10% canary gets about 12, above the policy's 10 per period


@contextmanager
def deployed(tmp: Path, *c_values: str) -> Iterator[Context]:
    """The app deployed on a local cloud, v1 released (champion), and one version per further ``C`` trained.

    Opened inside each test, not in a fixture: the local cloud routes handlers' stdout (their EMF metrics)
    from sys.stdout, which pytest's capture swaps between a fixture's setup and the test's call."""
    args = build_parser().parse_args(["--state-dir", str(tmp / "state"), "status", MODEL])
    with open_context(args) as ctx:
        for c in ("1.0", *c_values):
            spec = tmp / "models" / f"{MODEL}.toml"
            spec.parent.mkdir(exist_ok=True)
            spec.write_text(DEMO_SPEC.read_text().replace("C = 1.0", f"C = {c}"))
            run_training(ctx, spec)
        assert run_release(ctx, MODEL, 1)["record"]["outcome"] == "promoted"
        yield ctx


def release_with_traffic(
    ctx: Context, version: int, on_shift: Callable[[], None] = lambda: None
) -> tuple[dict[str, Any], Counter[str]]:
    """Release ``version`` with the production bake while clients score a row through ``live`` every
    virtual half second; ``on_shift`` runs once, when the canary starts taking traffic. Returns the release
    record and the responses' statuses by the model version that answered."""
    started = run_release(ctx, MODEL, version, wait=False)
    sfn, fn = ctx.client("stepfunctions"), ctx.deployment.function_name(MODEL)
    body = json.dumps({"instances": [ROW]}).encode()
    answers: Counter[str] = Counter()
    shifted = False
    deadline = time.monotonic() + 180
    with ctx.cloud.clock.participant():  # virtual time passes only while this client sleeps on the clock
        while sfn.describe_execution(executionArn=started["execution"])["status"] == "RUNNING":
            assert time.monotonic() < deadline, "the release did not finish"
            record = release.read_json(ctx.registry, f"releases/{MODEL}/last.json") or {}
            if not shifted and any(e["event"] == "shift" for e in record.get("timeline", [])):
                shifted = True
                on_shift()
            for _ in range(REQUESTS_PER_10_SECONDS if shifted else 1):
                event = proxy_event("POST", f"/v1/models/{MODEL}:predict", body, headers={"content-type": [JSON]})
                result, _ = ctx.cloud.lambdas.invoke(fn, "live", event)
                headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
                for key, values in (result.get("multiValueHeaders") or {}).items():
                    headers[key.lower()] = ", ".join(map(str, values))
                answers[f"v{headers.get('x-model-version', '?')} {result['statusCode']}"] += 1
            ctx.cloud.clock.sleep(10)
    record = release.read_json(ctx.registry, f"releases/{MODEL}/last.json") or {}
    return record, answers


JSON = "application/json"


def test_a_healthy_canary_under_traffic_is_promoted(tmp_path: Path) -> None:
    # Given v1 live and champion; when v2 is released with the production canary under client traffic
    with deployed(tmp_path, "0.3") as ctx:
        record, answers = release_with_traffic(ctx, 2)
        champion = ctx.registry.get_champion(MODEL)
    # Then the canary served its share successfully, the bake found nothing, and v2 is promoted
    assert answers["v2 200"] > 0 and not [k for k in answers if not k.endswith(" 200")], answers
    assert record["version"] == 2 and record["outcome"] == "promoted", record.get("cause")
    checked = next(e for e in record["timeline"] if e["event"] == "bake-checked")
    assert checked["fired"] == [] and checked["evidence"]["requests"] >= 10
    assert checked["evidence"]["server_errors"] == 0 and checked["evidence"]["scores"] > 0
    assert champion == 2


def test_a_canary_answering_only_server_errors_rolls_back_and_leaves_the_champion(tmp_path: Path) -> None:
    # Given the champion serving all traffic, and v2 whose artifact is gone from the registry by the time its
    # first canary request starts an execution environment (the gate read it; a cleanup deleted it since)
    with deployed(tmp_path, "0.3") as ctx:
        champion = ctx.registry.get_champion(MODEL)
        fn = ctx.deployment.function_name(MODEL)
        lam, s3 = ctx.client("lambda"), ctx.client("s3")
        alias = release.get_alias(lam, fn)
        assert alias is not None
        live_before = alias["FunctionVersion"]

        def lose_the_artifact() -> None:
            s3.delete_object(Bucket=ctx.registry.bucket, Key=f"models/{MODEL}/2/model.onnx")

        # When v2 is released with the production canary under client traffic
        record, answers = release_with_traffic(ctx, 2, on_shift=lose_the_artifact)
        champion_after = ctx.registry.get_champion(MODEL)
        weights_after = release.alias_weights(release.get_alias(lam, fn))
    # Then every canary request was a server error, and the release rolled back, saying why
    assert answers["v2 503"] >= 10 and answers["v2 200"] == 0, answers
    assert record["version"] == 2 and record["outcome"] == "rolled-back"
    cause = record["cause"]
    # the statistical gate sees it first, during the bake: every canary request it counted was an error
    assert cause.get("error") == "statistical-gate" and "error-rate test" in cause["reason"], cause
    (test,) = [t for t in cause["tests"] if t["test"] == "error-rate"]
    assert test["n"][0] >= 10 and test["candidate"] == 1.0 and test["p_value"] < test["alpha"]
    assert not [e for e in record["timeline"] if e["event"] == "bake-checked"]
    # and the champion, and the alias it serves, are untouched
    assert champion_after == champion
    assert weights_after == {live_before: 1.0}
