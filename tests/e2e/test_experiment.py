"""An A/B test on the local cloud, end to end: `experiment start` → users through the API gateway with outcomes
on :feedback → `experiment status` (the deployed experiment job) → `report` → `conclude`.

The two variants serve the same ONNX model (v2 is v1's model registered again), so only the simulated
outcomes differ: B's users convert at 75%, A's at 5%, a lift large enough to be decided on 80 units (the
sequential test misses it in none of 4,000 simulated runs of this size).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeck import experiment_analysis as ea
from modeldeck.cli import build_parser
from modeldeck.cli.common import CliError, Context
from modeldeck.deployment import Deployment
from modeldeck.gateway import Gateway
from modeldeck.localcloud import LocalCloud
from modeldeck.registry import BASELINE, HOLDOUT, Registry
from tests.fixtures.gateway import deployed_api
from tests.fixtures.inference import MODEL, ROW

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No application metrics to publish")]
API_KEY = "e2e-experiment-key"
UNITS = 80


@pytest.fixture(scope="module")
def cloud(trained_demo: Any) -> Iterator[LocalCloud]:
    """Given v1 live and v2 registered (the same model under another fingerprint)."""
    with deployed_api(trained_demo) as c:
        files = {BASELINE: trained_demo.baseline, HOLDOUT: trained_demo.holdout}
        Registry(c.client("s3"), c.bucket).register(
            replace(trained_demo.card, spec_sha256="2" * 64), trained_demo.onnx, files
        )
        yield c


def run(cloud: LocalCloud, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    args = build_parser().parse_args(["--json", *argv])
    ctx = Context(args, cloud.client, cloud.bucket, Deployment(cloud.client, cloud.deployer.outputs, cloud), cloud)
    assert args.func(ctx) == 0
    return json.loads(capsys.readouterr().out)


def post(gateway: Gateway, route: str, body: Any) -> tuple[int, Any]:
    headers = {"x-api-key": [API_KEY], "content-type": ["application/json"]}
    response = gateway.handle("POST", f"/v1/models/{MODEL}:{route}", headers, json.dumps(body).encode())
    return response.status, json.loads(response.body)


def test_an_ab_test_runs_from_start_to_a_decision_and_concludes(
    cloud: LocalCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an experiment starts between the live v1 and v2 on conversion, keyed by the user_id field
    doc = run(
        cloud, capsys, "experiment", "start", MODEL, "--variant", "2", "--unit-key", "user_id",
        "--metric", "conversion", "--mde", "0.3", "--baseline-rate", "0.1",
    )  # fmt: skip
    # Then v1 is the champion A on the alias's version, v2 a published challenger, and the size is computed
    a, b = doc["variants"]
    assert (a["name"], a["version"], b["name"], b["version"]) == ("A", 1, "B", 2)
    assert a["weight"] == b["weight"] == 0.5 and a["qualifier"] != b["qualifier"]
    assert doc["min_units"] > 0 and doc["unit_key"] == {"field": "user_id"}
    # And a second start is refused while it runs
    with pytest.raises(CliError, match="already running"):
        run(cloud, capsys, "experiment", "start", MODEL, "--variant", "2", "--unit-key", "u", "--metric", "conversion")

    # And a release is refused while it runs, with how to conclude it, and the refusal frees the release lock
    from modeldeck import release
    from tests.fixtures.gateway import model_function

    registry = Registry(cloud.client("s3"), cloud.bucket)
    clients = release.Clients(cloud.client("lambda"), cloud.client("cloudwatch"), cloud.client("sns"), registry)
    with pytest.raises(release.ReleaseRefused, match="is running on breast-cancer; conclude it first"):
        release.gate({"model": MODEL, "version": 2, "function_name": model_function(cloud)}, clients)
    assert release.read_json(registry, f"releases/{MODEL}/lock.json") is None

    # When users arrive through the gateway (one request each) and B's convert far more often
    gateway = Gateway(cloud, api_key=API_KEY)
    rng = np.random.default_rng(14)
    served: dict[str, int] = {}
    for i in range(UNITS):
        status, body = post(gateway, "predict", {"instances": [ROW], "user_id": f"user-{i}"})
        assert status == 200, body
        served[body["model_version"]] = served.get(body["model_version"], 0) + 1
        if rng.random() < (0.75 if body["model_version"] == "2" else 0.05):
            assert post(gateway, "feedback", {"id": body["id"], "value": 1})[0] == 202
    assert post(gateway, "predict", {"instances": [ROW]})[0] == 200  # no unit key: the champion, apart
    cloud.flush_capture()

    # Then status (the deployed experiment job) counts every unit once, apart from the unassigned request
    snap = run(cloud, capsys, "experiment", "status", MODEL)
    units = {v["name"]: v["units"] for v in snap["variants"]}
    assert units == {"A": served.get("1", 0), "B": served.get("2", 0)} and sum(units.values()) == UNITS
    assert snap["unassigned"]["requests"] == 1 and not snap["srm"]["mismatch"]
    assert snap["decision"]["outcome"] == "winner" and snap["decision"]["winner"] == "B"
    # And CloudWatch has each variant's metrics (EMF from the job's log), once its ingestion delay has passed
    cloud.clock.advance(180)
    listed = cloud.client("cloudwatch").list_metrics(
        Namespace="modeldeck", Dimensions=[{"Name": "experiment", "Value": doc["id"]}]
    )["Metrics"]
    seen = {(m["MetricName"], {d["Name"]: d["Value"] for d in m["Dimensions"]}["variant"]) for m in listed}
    assert {("Units", "A"), ("Units", "B"), ("MetricValue", "B"), ("PValue", "B")} <= seen
    assert ("PValue", "A") not in seen
    # And the decision went out once on the alert topic, and the snapshot is stored
    assert snap["notified"] is True
    assert run(cloud, capsys, "experiment", "status", MODEL)["notified"] is False
    report = tmp_path / "report.html"
    assert run(cloud, capsys, "experiment", "report", MODEL, "--out", str(report))["snapshots"] == 2
    assert "<svg" in report.read_text() and "winner" in report.read_text()

    # When it is concluded keeping the champion
    done = run(cloud, capsys, "experiment", "conclude", MODEL, "--keep")
    # Then the document is gone (routing stops) and the experiment archived with its conclusion
    s3 = cloud.client("s3")
    assert ea.load_experiment(s3, cloud.bucket, MODEL) is None
    archived = ea.read_json(s3, cloud.bucket, done["archived_at"])
    assert archived is not None and archived["conclusion"] == {"action": "keep", "version": 1}
    with pytest.raises(CliError, match="no experiment is running"):
        run(cloud, capsys, "experiment", "status", MODEL)
    # And no experiment starts while a release holds the lock
    release.write_json(registry, f"releases/{MODEL}/lock.json", {"execution": "e-1", "version": 2})
    try:
        with pytest.raises(CliError, match="a release of breast-cancer is in flight"):
            run(
                cloud,
                capsys,
                "experiment",
                "start",
                MODEL,
                "--variant",
                "2",
                "--unit-key",
                "u",
                "--metric",
                "conversion",
            )
    finally:
        cloud.client("s3").delete_object(Bucket=cloud.bucket, Key=f"releases/{MODEL}/lock.json")


def test_conclude_promote_stops_the_experiment_before_releasing_the_version_through_the_release_path(
    cloud: LocalCloud, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running experiment of v1 against v2
    run(
        cloud, capsys, "experiment", "start", MODEL, "--variant", "2", "--unit-key", "user_id", "--metric", "conversion"
    )
    s3 = cloud.client("s3")
    # When conclude names a version that is not a variant, then it refuses and the experiment keeps running
    with pytest.raises(CliError, match="v3 is not a variant"):
        run(cloud, capsys, "experiment", "conclude", MODEL, "--promote", "3")
    assert ea.load_experiment(s3, cloud.bucket, MODEL) is not None
    # When it promotes v2, the release path (state machine, gate included) runs once the document is gone
    from modeldeck.cli import release as release_cli

    released: list[tuple[str, int, bool]] = []

    def fake_release(ctx: Context, model: str, version: int, **_: Any) -> dict[str, Any]:
        released.append((model, version, ea.load_experiment(s3, cloud.bucket, model) is None))
        return {"execution": "x", "status": "SUCCEEDED", "record": {"outcome": "promoted"}}

    monkeypatch.setattr(release_cli, "run_release", fake_release)
    done = run(cloud, capsys, "experiment", "conclude", MODEL, "--promote", "2")
    assert released == [(MODEL, 2, True)]
    assert done["experiment"]["conclusion"] == {"action": "promote", "version": 2}
    assert done["release"]["record"]["outcome"] == "promoted"
