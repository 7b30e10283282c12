"""`make demo`: the whole lifecycle on the local cloud, narrated, in nine stages.

Every stage goes through the same paths a user's commands take: the training and release state
machines, the local API gateway over real HTTP, the drift Lambda, the alarm evaluator and SNS. Each stage
checks that what it set out to show happened, and the demo exits non-zero at the first one that did not.

Releases use the production canary policy (a 10-minute bake, then the metric settle time). The local
cloud runs on a virtual clock that jumps ahead while nothing is working, so a bake takes seconds of wall
time; each stage reports both. Client traffic takes part in that clock: one request per virtual second.
The faulty version of stage 6 is a real model (``models/demo/breast-cancer-recall-weighted.toml``),
released through the normal path; no fault is injected anywhere.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modeldeck import release
from modeldeck.cli.common import CliError, rule
from modeldeck.errors import ModeldeckError

if TYPE_CHECKING:
    from modeldeck.cli.common import Context

API_KEY = "demo-key"
# Next to the demo spec: models/demo/ (a subfolder, so the app does not serve it as a model of its own).
FAULTY_SPEC = Path("demo") / "breast-cancer-recall-weighted.toml"
TRAFFIC_INTERVAL_SECONDS = 1.0  # virtual seconds between client requests during a release
STAGES = 9


class StageFailed(ModeldeckError):
    """A demo stage did not behave as it says it does."""


@dataclass
class DemoSettings:
    spec: Path
    traffic_rows: int = 20

    @property
    def faulty_spec(self) -> Path:
        return self.spec.parent / FAULTY_SPEC


class Demo:
    """Runs the stages against a local-cloud context; ``run`` returns 0 or raises StageFailed."""

    def __init__(self, ctx: Context, settings: DemoSettings) -> None:
        self.ctx = ctx
        self.s = settings
        self.out = ctx.out
        self.model = ""
        self.url = ""
        self.queue = ""
        self.rows: list[dict[str, Any]] = []
        self._holdout: dict[str, Any] = {}
        self.served: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stage_started: tuple[float, float] | None = None

    # -- narration -------------------------------------------------------------------------------------
    def _times(self) -> tuple[float, float]:
        """(wall seconds, virtual seconds) now."""
        return time.monotonic(), self.ctx.cloud.clock.time()

    def _stage_took(self) -> None:
        if self._stage_started is not None:
            (wall0, virtual0), (wall, virtual) = self._stage_started, self._times()
            self.out.print(f"[dim]took {wall - wall0:.1f} s wall, {_span(virtual - virtual0)} virtual[/]")

    def stage(self, number: int, title: str, what: str) -> None:
        self._stage_took()
        self._stage_started = self._times()
        rule(self.out, f"[bold cyan]stage {number}/{STAGES} · {title}")
        self.out.print(f"[dim]{what}[/]")

    def check(self, ok: bool, message: str, otherwise: str = "") -> None:
        """Say what the stage showed, or stop the demo with what it expected and (``otherwise``) what happened."""
        if not ok:
            raise StageFailed(f"expected: {message}" + (f"; instead: {otherwise}" if otherwise else ""))
        self.out.print(f"[green]✓[/] {message}")

    @staticmethod
    def _outcome(record: dict[str, Any]) -> str:
        cause = record.get("cause") or {}
        why = cause.get("alarm") or cause.get("error") or (record.get("gate") or {}).get("reason") or ""
        return f"{record.get('outcome') or 'no outcome'}" + (f" ({why}: {cause.get('reason', '')})" if why else "")

    # -- plumbing --------------------------------------------------------------------------------------
    def _setup(self) -> None:
        from modeldeck.spec import load_spec

        spec = load_spec(self.s.spec)
        self.model = spec.name
        sqs, sns = self.ctx.client("sqs"), self.ctx.client("sns")
        self.queue = sqs.create_queue(QueueName="modeldeck-demo-inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.ctx.deployment.output("AlertTopicArn"), Protocol="sqs", Endpoint=arn)

    def notifications(self) -> list[dict[str, Any]]:
        sqs = self.ctx.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])

    def show_notification(self, message: dict[str, Any]) -> None:
        """An SNS message as an operator reads it: ours in full; CloudWatch's alarm JSON as its state and reason."""
        body = message.get("Message", "")
        try:
            alarm = json.loads(body)
        except ValueError:
            alarm = None
        if isinstance(alarm, dict) and "AlarmName" in alarm:
            body = f"{alarm.get('NewStateValue')}: {alarm.get('NewStateReason')} (CloudWatch's alarm JSON)"
        self.out.print(f"[bold]SNS › {message.get('Subject', '')}[/]\n{body}")

    def wait_for(self, predicate: Any, timeout: float, what: str, step: float = 15) -> list[dict[str, Any]]:
        """The notifications received until ``predicate`` holds, waiting up to ``timeout`` virtual seconds:
        the demo takes part in the virtual clock, so CloudWatch's metric delay and minute-by-minute alarm
        evaluation pass as they would on AWS, only faster."""
        seen: list[dict[str, Any]] = []

        def arrived() -> bool:
            seen.extend(self.notifications())
            return bool(predicate(seen))

        try:
            self.ctx.cloud.clock.run_until(arrived, step=step, limit=timeout)
        except TimeoutError:
            raise StageFailed(f"timed out after {_span(timeout)} (virtual) waiting for {what}") from None
        return seen

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", "x-api-key": API_KEY},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")

    def predict(self, rows: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        status, headers, body = self.http("POST", f"/v1/models/{self.model}:predict", {"instances": rows})
        version = headers.get("X-Executed-Version") or headers.get("x-executed-version") or "?"
        (self.served if status == 200 else self.errors)[version] += 1
        return status, headers, body

    def traffic_while(self, running: threading.Event, rows: list[dict[str, Any]] | None = None) -> threading.Thread:
        """Steady client traffic until ``running`` is cleared: one request per virtual second. The thread takes
        part in the virtual clock, so time only jumps between its requests, never past them."""
        clock = self.ctx.cloud.clock

        def loop() -> None:
            with clock.participant():
                while running.is_set():
                    self.predict(rows or self.rows)
                    clock.sleep(TRAFFIC_INTERVAL_SECONDS)

        thread = threading.Thread(target=loop, name="demo-traffic", daemon=True)
        thread.start()
        return thread

    def release_with_traffic(self, version: int, **options: Any) -> dict[str, Any]:
        from modeldeck.cli.release import run_release

        self.served.clear()
        self.errors.clear()
        running = threading.Event()
        running.set()
        thread = self.traffic_while(running) if self.url else None
        try:
            result = run_release(self.ctx, self.model, version, **options)
        finally:
            running.clear()
            if thread is not None:
                thread.join(5)
        return result

    def bake_minutes(self) -> float:
        """The canary policy's bake, the production default (the CanaryBakeSeconds output)."""
        return self.ctx.deployment.default_bake_seconds() / 60

    def train_variant(self, tag: str, changes: dict[str, Any]) -> Any:
        """Train a variant of the demo spec (another hyperparameter), as a data scientist would."""
        import tomllib

        from modeldeck.cli.models import run_training

        raw = tomllib.loads(self.s.spec.read_text())
        raw["estimator"]["params"].update(changes)
        path = self.ctx.args.state_dir / f"{self.model}-{tag}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_to_toml(raw))
        card, _, _ = run_training(self.ctx, path)
        self.out.print(f"registered {card.name} v{card.version} ({', '.join(f'{k}={v}' for k, v in changes.items())})")
        return card

    # -- the stages ------------------------------------------------------------------------------------
    def run(self) -> int:
        from modeldeck.cli.models import render_card, run_training

        started, virtual_started = time.monotonic(), self.ctx.cloud.clock.time()
        self._setup()

        self.stage(
            1,
            "train and register v1",
            "The training state machine validates the data, trains the "
            "Pipeline, converts it to ONNX, runs the parity gate, compares with the champion and registers.",
        )
        v1, _, _ = run_training(self.ctx, self.s.spec)
        render_card(self.ctx, v1)
        self.check(
            v1.parity["label_agreement"] == 1.0,
            f"v{v1.version} registered; parity 100% on {v1.parity['rows']} holdout rows",
        )

        self.stage(2, "release v1", "Nothing is live yet, so the first release goes straight to the alias `live`.")
        result = self.release_with_traffic(v1.version)
        self.check(
            result["record"].get("outcome") == "promoted",
            f"v{v1.version} is live and champion",
            self._outcome(result["record"]),
        )
        self._load_rows(v1)

        self.stage(
            3,
            "serve real HTTP traffic",
            "The local API gateway turns HTTP into API Gateway proxy events "
            "and invokes the alias `live`, with an API key, exactly like API Gateway would.",
        )
        self._serve_requests(v1)

        self.stage(
            4,
            "train v2 and compare",
            "A second candidate (another regularisation strength), scored side by side with v1 on v2's holdout.",
        )
        v2 = self.train_variant("v2", {"C": 0.3})
        self._diff(v1.version, v2.version)

        self.stage(
            5,
            f"canary v2 at 10% for {self.bake_minutes():g} minutes",
            "Weighted alias routing sends 10% of traffic to v2 while its canary alarms (server-error rate, "
            "Lambda errors, p99 latency, prediction shift against the champion) are watched, then "
            "judged over the whole bake once CloudWatch has the metrics (the production policy: the local "
            "cloud's virtual clock makes the wait short).",
        )
        result = self.release_with_traffic(v2.version)
        self.out.print(f"requests served during the release, by Lambda version: {dict(self.served)}")
        self.check(
            result["record"].get("outcome") == "promoted",
            f"v{v2.version} was healthy and is promoted",
            self._outcome(result["record"]),
        )

        self.stage(
            6,
            "release a faulty v3",
            "v3 is a real model version: the demo model retrained with malignant cases weighted 300:1 "
            f"({self.s.faulty_spec.relative_to(self.s.faulty_spec.parents[2])}), as someone chasing recall might. "
            "The gates pass it: its ONNX graph matches scikit-learn, and the differential test judges the spec's "
            "primary metric, ROC AUC, which ranks rows and barely moves when every score shifts alike (the diff "
            "below shows what it does not judge: accuracy falls). Live, its scores shift and benign tumours are "
            "called malignant; no request fails. The canary's statistical gate sees the shift during the bake (its "
            "prediction-shift test; the prediction-shift alarm sees it too), and the release rolls back by itself.",
        )
        from modeldeck.cli.models import run_training

        v3, _, _ = run_training(self.ctx, self.s.faulty_spec)
        self.out.print(f"registered {v3.name} v{v3.version} (class_weight malignant:benign = 300:1)")
        self._diff(v2.version, v3.version)
        self.notifications()
        result = self.release_with_traffic(v3.version)
        record = result["record"]
        cause = record.get("cause") or {}
        why = cause.get("alarm") or cause.get("reason")  # the alarm's name, or the statistical gate's reason
        self.out.print(f"requests served during the release, by Lambda version: {dict(self.served)}")
        self.check(
            record.get("outcome") == "rolled-back" and "prediction-shift" in str(why),
            f"v{v3.version} rolled back: {why}",
            self._outcome(record),
        )
        messages = self.wait_for(
            lambda seen: any("rolled back" in m.get("Subject", "") for m in seen), 60, "the rollback notification"
        )
        self.show_notification(next(m for m in messages if "rolled back" in m.get("Subject", "")))
        weights = release.alias_weights(
            release.get_alias(self.ctx.client("lambda"), self.ctx.deployment.function_name(self.model))
        )
        self.check(len(weights) == 1, f"the alias is whole again: {weights}")
        self.check(not self.errors, f"no client saw an error during the faulty release ({dict(self.errors)} errors)")

        self.stage(
            7,
            "A/B test: v2 against v1 on conversion",
            f"An experiment splits users 50/50 between the champion v2 (A) and v1 (B), sticky per user_id. "
            f"{AB_USERS} simulated users send one request each through the gateway; a user who converts reports it "
            f"on :feedback (value 1). The simulation gives A's users a {AB_RATES['A']:.0%} conversion rate and B's "
            f"{AB_RATES['B']:.0%}: a lift this large is decided on ~{AB_USERS // 2} users per variant (a 2-point lift "
            "would need thousands, too many requests for a demo). The inference function picks the experiment up "
            "within its 20 s cache TTL, and the experiment job runs on its "
            "15-minute schedule on the virtual clock and publishes its decision once.",
        )
        self._experiment()

        self.stage(
            8,
            "drifted traffic",
            "Clients start sending shifted data. The drift job judges the window against the serving version's "
            "baseline and publishes its metrics; the drift alarms judge whole hours, so CloudWatch fires them "
            "once the hour is over (minutes of virtual time).",
        )
        self._drift()

        self.stage(9, "status", "Alias weights, versions, alarms, champion and the last release.")
        from modeldeck.cli.release import cmd_status

        self.ctx.args.model = self.model
        cmd_status(self.ctx)
        self._can_continue()
        self._stage_took()
        virtual = self.ctx.cloud.clock.time() - virtual_started
        rule(
            self.out, f"[bold green]demo complete in {time.monotonic() - started:.0f} s wall, {_span(virtual)} virtual"
        )
        return 0

    def _can_continue(self) -> None:
        """The demo leaves a state a user can go on from: no health alarm would refuse the next release."""
        prefix = self.ctx.deployment.output("AlarmPrefix", required=False) or "modeldeck"
        names = [release.alarm_name(prefix, self.model, kind) for kind in release.HEALTH_ALARMS]
        states = release.alarm_states(self.ctx.client("cloudwatch"), names)
        firing = [name for name, alarm in states.items() if alarm["StateValue"] == "ALARM"]
        self.check(not firing, f"no health alarm in ALARM ({len(states)} watched): the next release may start")

    def _load_rows(self, card: Any) -> None:
        """Client traffic: holdout rows of the registered model (a mix of both classes)."""
        self._holdout = self.ctx.registry.get_json(self.model, card.version, "holdout.json")
        names = list(self._holdout["columns"])
        self.rows = [{n: self._holdout["columns"][n][i] for n in names} for i in range(self.s.traffic_rows)]

    def holdout(self) -> dict[str, Any]:
        """The first registered version's holdout: rows the models never trained on."""
        return self._holdout

    def _serve_requests(self, v1: Any) -> None:
        from modeldeck.gateway import Gateway, serve

        gateway = Gateway(self.ctx.cloud, api_key=API_KEY)
        server = serve(gateway, 0)
        threading.Thread(target=server.serve_forever, name="demo-gateway", daemon=True).start()
        self.url = gateway.server_url
        self.out.print(f"local gateway on {self.url} (x-api-key required)")
        status, _, _ = self.http("GET", f"/v2/models/{self.model}")
        self.check(status == 200, f"GET /v2/models/{self.model} → {status} (OIP metadata)")
        row = self.rows[0]
        oip = {
            "id": "demo-oip-1",
            "inputs": [
                {
                    "name": name,
                    "shape": [1, 1],
                    "datatype": "BYTES" if isinstance(value, str) else "FP32",
                    "data": [value],
                }
                for name, value in row.items()
            ],
        }
        status, _, body = self.http("POST", f"/v2/models/{self.model}/infer", oip)
        outputs = {o["name"]: o["data"] for o in (body or {}).get("outputs", [])} if status == 200 else body
        self.out.print(f"POST /v2/models/{self.model}/infer → {status}, outputs {json.dumps(outputs)}")
        self.check(
            status == 200 and body["id"] == "demo-oip-1" and body["model_version"] == str(v1.version),
            "an Open Inference Protocol client request was answered by v1",
        )
        status, _, body = self.predict(self.rows[:2])
        self.out.print(f"POST /v1/models/{self.model}:predict → {status}\n{json.dumps(body)[:400]}")
        self.check(status == 200 and len(body["predictions"]) == 2, "a :predict request with named features")
        request = urllib.request.Request(
            self.url + f"/v1/models/{self.model}:predict",
            data=b"{}",
            method="POST",
            headers={"content-type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            denied = 200
        except urllib.error.HTTPError as exc:
            denied = exc.code
        self.check(denied == 403, "a request without the API key is refused (403)")

    def _diff(self, old: int, new: int) -> None:
        from modeldeck.cli.models import cmd_models_diff

        args = self.ctx.args
        args.name, args.old, args.new = self.model, old, new
        cmd_models_diff(self.ctx)

    def _experiment(self) -> None:
        from modeldeck.cli.experiment import cmd_conclude, cmd_start, cmd_status
        from modeldeck.experiments import EXPERIMENT_TTL_S

        args, live = self.ctx.args, self.ctx.registry.get_champion(self.model)
        challenger = 1 if live != 1 else 2
        args.model, args.variant, args.champion, args.unit_key = (
            self.model,
            [(challenger, None)],
            None,
            {"field": "user_id"},
        )
        args.metric, args.mde, args.power, args.alpha, args.baseline_rate = "conversion", 0.3, 0.8, 0.05, 0.1
        args.sd, args.max_days = None, 14
        cmd_start(self.ctx)
        # Each execution environment reads experiment.json at most once per TTL (sandbox time, which runs on
        # the virtual clock): routing starts once that much time has passed, as it would in Lambda.
        self.out.print(f"[dim]waiting the inference function's {EXPERIMENT_TTL_S:g} s TTL for experiment.json[/]")
        self.ctx.cloud.clock.sleep(EXPERIMENT_TTL_S + 0.5)
        rng = np.random.default_rng(14)
        served: Counter[str] = Counter()
        converted: Counter[str] = Counter()
        for i in range(AB_USERS):
            row = self.rows[i % len(self.rows)]
            status, _, body = self.http(
                "POST", f"/v1/models/{self.model}:predict", {"instances": [row], "user_id": f"user-{i}"}
            )
            if status != 200:
                raise StageFailed(f"an experiment request was refused with {status}: {body}")
            variant = "A" if body["model_version"] == str(live) else "B"
            served[variant] += 1
            if rng.random() < AB_RATES[variant]:
                converted[variant] += 1
                self.http("POST", f"/v1/models/{self.model}:feedback", {"id": body["id"], "value": 1})
        self.out.print(
            f"{AB_USERS} users: " + ", ".join(f"{v} {served[v]} served, {converted[v]} converted" for v in "AB")
        )
        self.check(min(served["A"], served["B"]) > AB_USERS // 4, f"users are split about evenly: {dict(served)}")
        self.ctx.cloud.flush_capture()
        self.notifications()
        messages = self.wait_for(
            lambda seen: any("experiment" in m.get("Subject", "") for m in seen), 3600, "the experiment's decision"
        )
        self.show_notification(next(m for m in messages if "experiment" in m.get("Subject", "")))
        cmd_status(self.ctx)
        from modeldeck import experiment_analysis as ea
        from modeldeck.experiment_report import render_report

        doc = ea.load_experiment(self.ctx.client("s3"), self.ctx.registry.bucket, self.model) or {}
        history = ea.snapshots(self.ctx.client("s3"), self.ctx.registry.bucket, self.model, str(doc.get("id")))
        decision = history[-1]["decision"] if history else {}
        self.check(
            decision.get("outcome") == "winner" and decision.get("winner") == "A",
            f"the experiment job decided: A (v{live}) wins, after {len(history)} snapshot(s)",
            str(decision),
        )
        report = self.ctx.args.state_dir / "experiment-report.html"
        report.write_text(render_report(history))
        self.check(report.is_file(), f"experiment report written: {report.resolve()}")
        args.promote, args.keep = None, True
        # Routing may go on for up to the TTL; the next stage's requests carry no unit key, so they go to the
        # champion either way.
        cmd_conclude(self.ctx)

    def _drift(self) -> None:
        clock = self.ctx.cloud.clock  # capture records carry the local cloud's (virtual) time
        drift_start = clock.now()
        shifted = drifted_traffic(self.holdout(), 400)
        self.out.print(
            f"the shift: {DRIFTED_FEATURE} reads {DRIFT_FACTOR - 1:.0%} high (a recalibrated instrument); every other "
            "feature is sampled as the holdout has it"
        )
        for i in range(0, len(shifted), 20):
            status, _, _ = self.predict(shifted[i : i + 20])
            if status != 200:
                raise StageFailed(f"drifted traffic was refused with {status}")
        self.out.print(f"sent {len(shifted)} drifted rows in {len(shifted) // 20} requests")
        self.ctx.cloud.flush_capture()
        end = clock.now() + timedelta(seconds=1)
        window = f"{int((end - drift_start).total_seconds()) + 1}s"
        self.notifications()
        result, _ = self.ctx.cloud.lambdas.invoke(
            self.ctx.deployment.output("DriftFunctionName"),
            None,
            {"model": self.model, "window": window, "end": end.isoformat()},
        )
        summary = result["results"][0]
        breaches = ", ".join(f"{b['metric']} {b['value']:.3g} ≥ {b['threshold']:.3g}" for b in summary["breaches"])
        self.out.print(f"drift job: {summary['rows']} rows, {summary['status']}; {breaches or 'no breach'}")
        self.check(bool(summary.get("alarm")), "the drift job judged the window as drifted")
        messages = self.wait_for(
            lambda seen: any(
                m.get("Subject", "").startswith("ALARM") and "drift" in m.get("Subject", "") for m in seen
            ),
            2 * 3600,
            "a drift alarm",
            step=60,
        )
        for message in messages:
            subject = message.get("Subject", "")
            if subject.startswith("ALARM") or "drift" in subject.lower():
                self.show_notification(message)
        from modeldeck.drift import load_result, marker_key
        from modeldeck.drift_report import render_report

        start = end - timedelta(seconds=int(window[:-1]))
        stored = load_result(self.ctx.client("s3"), self.ctx.registry.bucket, marker_key(self.model, start, end))
        if stored is None:
            raise StageFailed("the drift job stored no result for the window")
        top = max(
            (f for v in stored["versions"].values() for f in (v.get("features") or {}).items()),
            key=lambda item: item[1]["psi"],
        )[0]
        self.check(top == DRIFTED_FEATURE, f"the report's top feature is the shifted one, {top}")
        report = self.ctx.args.state_dir / "drift-report.html"
        report.write_text(render_report(stored, [stored]))
        self.check(report.is_file(), f"drift report written: {report.resolve()}")


AB_USERS = 200
AB_RATES = {"A": 0.6, "B": 0.1}  # the simulated users' conversion rate per variant (a large, known lift)
DRIFTED_FEATURE = "mean_radius"
DRIFT_FACTOR = 1.3


def drifted_traffic(holdout: dict[str, Any], n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` client rows drawn from the holdout (so every feature keeps its real distribution and
    correlations) with one declared shift: :data:`DRIFTED_FEATURE` reads :data:`DRIFT_FACTOR` times high."""
    rng = np.random.default_rng(seed)
    columns = holdout["columns"]
    picks = rng.integers(0, len(holdout["target"]), size=n)
    rows = [{name: values[i] for name, values in columns.items()} for i in picks]
    for row in rows:
        row[DRIFTED_FEATURE] = float(row[DRIFTED_FEATURE]) * DRIFT_FACTOR
    return rows


def _span(seconds: float) -> str:
    """A duration for narration: seconds under two minutes, else minutes."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _to_toml(raw: dict[str, Any]) -> str:
    """A small TOML writer for spec tables (strings, numbers, booleans, lists, nested tables, arrays of tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, v in raw.items():
        if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")
    for key, v in tables:
        items = v if isinstance(v, list) else [v]
        for item in items:
            lines.append(f"\n[[{key}]]" if isinstance(v, list) else f"\n[{key}]")
            nested = []
            for k, x in item.items():
                if isinstance(x, list) and x and all(isinstance(y, dict) for y in x):
                    nested.append((k, x))
                else:
                    lines.append(f"{k} = {value(x)}")
            for k, x in nested:
                for y in x:
                    lines.append(f"\n[[{key}.{k}]]")
                    lines.extend(f"{kk} = {value(vv)}" for kk, vv in y.items())
    return "\n".join(lines) + "\n"


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the narrated lifecycle on the local cloud")
    demo.add_argument("--spec", type=Path, default=Path("models/breast-cancer.toml"))
    # A fresh cloud of its own, even while `modeldeck serve` owns the state directory.
    demo.set_defaults(func=cmd_demo, fresh_cloud=True)


def cmd_demo(ctx: Context) -> int:
    """The whole lifecycle, narrated, on the local cloud (make demo)."""
    if ctx.cloud is None:
        raise CliError("the demo runs on the local cloud; drop --aws")
    return Demo(ctx, DemoSettings(spec=ctx.args.spec)).run()
