"""Experiments' data plane: the experiment document, sticky assignment, where the unit is read, what reaches
the records, and forwarding to a challenger's version (its failures become the client's error)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest

from modeldeck.errors import ValidationError
from modeldeck.experiments import (
    EXPERIMENT_MARKER,
    Experiment,
    ExperimentError,
    assign,
    bucket_of,
    experiment_key,
    record_field,
    unit_digest,
    unit_of,
)
from modeldeck.serving import ChallengerError, ExperimentConfig, check_fields, forward

DOC: dict[str, Any] = {
    "id": "exp-20261129T0300-3fa2",
    "model": "breast-cancer",
    "status": "running",
    "unit_key": {"field": "user_id"},
    "variants": [
        {"name": "A", "version": 3, "weight": 0.5, "function_name": "fn", "qualifier": "7"},
        {"name": "B", "version": 4, "weight": 0.5, "function_name": "fn", "qualifier": 9},
    ],
    "champion": "A",
    "metric": "conversion",
    "alpha": 0.05,
    "power": 0.8,
    "mde": 0.02,
    "baseline_rate": 0.1,
    "min_units": 3623,
    "max_days": 14,
    "started_at": "2026-11-29T03:00:00Z",
}


def experiment(**changes: Any) -> Experiment:
    return Experiment.from_json({**DOC, **changes})


# --- the document ------------------------------------------------------------------------------------------


def test_the_document_round_trips_with_fields_it_does_not_know() -> None:
    # Given the contract's document plus a field a later version adds
    doc = {**DOC, "notes": "H3's field"}
    # When parsed (from bytes, as read from S3) and written back
    parsed = Experiment.from_json(json.dumps(doc).encode())
    # Then nothing is lost, and the qualifier is the Lambda version as a string
    assert parsed.to_json() == {**doc, "variants": [DOC["variants"][0], {**DOC["variants"][1], "qualifier": "9"}]}
    assert Experiment.from_json(parsed.to_json()) == parsed
    assert parsed.champion_variant.version == 3 and parsed.running
    assert experiment_key("breast-cancer") == "models/breast-cancer/experiment.json"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "'id' must be a non-empty string"),
        ({"status": "paused"}, "'status' must be one of running, stopped, concluded"),
        ({"unit_key": "user_id"}, '\'unit_key\' must be {"field": NAME} or {"header": NAME}'),
        ({"unit_key": {"field": ""}}, "'unit_key.field' must be a non-empty string"),
        ({"unit_key": {"field": "instances"}}, "'unit_key.field' 'instances' is a field of the inference protocol"),
        ({"variants": DOC["variants"][:1]}, "'variants' must be a list of at least two variants"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "version": "4"}]}, "'variants[1].version' must"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "weight": 0}]}, "'variants[1].weight' must"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "weight": 0.6}]}, "'variants': the weights must"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "qualifier": None}]}, "'variants[1].qualifier'"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "function_name": 1}]}, "'variants[1].function_na"),
        ({"variants": [DOC["variants"][0], {**DOC["variants"][1], "name": "A"}]}, "'variants': duplicate name(s) 'A'"),
        ({"champion": "C"}, "'champion' 'C' is not one of the variants A, B"),
        ({"alpha": 0.9}, "'alpha' must be a number in [1e-06, 0.5]"),
        ({"min_units": 10.5}, "'min_units' must be an integer"),
        ({"max_days": float("nan")}, "'max_days' must be a number"),
    ],
)
def test_an_invalid_document_names_the_bad_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError) as err:
        experiment(**changes)
    assert str(err.value).startswith(message), str(err.value)


def test_a_document_that_is_not_json_is_refused() -> None:
    with pytest.raises(ExperimentError, match="not JSON"):
        Experiment.from_json(b"{")


# --- assignment --------------------------------------------------------------------------------------------


def test_assignment_follows_the_contracts_hash() -> None:
    # SHA-256 of "{id}:{unit}", first 8 bytes big-endian, over 2**64, against cumulative weights
    import hashlib

    exp = experiment()
    for unit in ("u-1", "u-2", "42", "ünïcode"):
        x = int.from_bytes(hashlib.sha256(f"{exp.id}:{unit}".encode()).digest()[:8], "big") / 2**64
        assert assign(exp, unit).name == ("A" if x < 0.5 else "B")
        assert bucket_of(exp.id, unit) / 2**64 == x


def test_one_unit_gets_one_variant_across_thousands_of_requests() -> None:
    # Given a running experiment, parsed afresh for each request (a new execution environment's view)
    raw = json.dumps(DOC).encode()
    units = [f"user-{i}" for i in range(50)]
    first = {u: assign(Experiment.from_json(raw), u).name for u in units}
    # When each unit sends 100 requests, in any order
    seen: dict[str, set[str]] = {u: set() for u in units}
    exp = Experiment.from_json(raw)
    for i in range(5000):
        u = units[(i * 7919) % len(units)]
        seen[u].add(assign(exp, u).name)
    # Then every unit always got its first variant
    assert all(seen[u] == {first[u]} for u in units)
    assert set(first.values()) == {"A", "B"}


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    # Given units assigned here, and in a fresh interpreter whose str hashes are salted differently
    units = [f"u{i}" for i in range(200)]
    here = [assign(experiment(), u).name for u in units]
    code = (
        "import json,sys; from modeldeck.experiments import Experiment, assign; "
        "e = Experiment.from_json(sys.stdin.read()); print(''.join(assign(e, f'u{i}').name for i in range(200)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(DOC), capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    # Then each unit has the same variant in both
    assert there == "".join(here)


def test_numbers_and_their_string_are_one_unit() -> None:
    exp = experiment()
    assert unit_of(exp, {"user_id": 42}, None, "predict") == "42"
    assert unit_of(exp, {"user_id": 42.0}, None, "predict") == "42"
    assert unit_of(exp, {"user_id": "42"}, None, "predict") == "42"
    assert unit_of(exp, {"user_id": 4.5}, None, "predict") == "4.5"


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.9, 0.1), (0.2, 0.3, 0.5)])
def test_the_split_follows_the_weights_over_many_units(weights: tuple[float, ...]) -> None:
    # Given an experiment with these weights
    variants = [
        {"name": chr(65 + i), "version": i + 1, "weight": w, "function_name": "fn", "qualifier": str(i + 1)}
        for i, w in enumerate(weights)
    ]
    exp = experiment(variants=variants)
    # When 20,000 distinct units are assigned
    n = 20_000
    counts = Counter(assign(exp, f"unit-{i}").name for i in range(n))
    observed = np.array([counts[chr(65 + i)] for i in range(len(weights))], dtype=float)
    expected = n * np.array(weights)
    # Then the shares are as weighted: chi-square below its 99.9th percentile (2 variants: 10.8; 3: 13.8)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < {1: 10.83, 2: 13.82}[len(weights) - 1], (observed, expected)


def test_another_experiment_reshuffles_the_units() -> None:
    # Units in B under one experiment are split again, independently, by the next one
    a, b = experiment(), experiment(id="exp-next")
    units = [f"user-{i}" for i in range(4000)]
    first_b = [u for u in units if assign(a, u).name == "B"]
    share = sum(assign(b, u).name == "B" for u in first_b) / len(first_b)
    assert 0.45 < share < 0.55


# --- where the unit is read, and what reaches the records --------------------------------------------------


def test_the_unit_is_read_from_the_body_the_oip_parameters_or_a_header() -> None:
    by_field, by_header = experiment(), experiment(unit_key={"header": "X-User-Id"})
    assert unit_of(by_field, {"instances": [], "user_id": "u1"}, {"x-user-id": "h"}, "predict") == "u1"
    assert unit_of(by_field, {"inputs": [], "parameters": {"user_id": "u2"}}, None, "infer") == "u2"
    assert unit_of(by_field, {"inputs": [], "user_id": "top"}, None, "infer") is None  # OIP: parameters only
    assert unit_of(by_header, {"user_id": "u1"}, {"X-USER-ID": "h1"}, "predict") == "h1"  # any case
    assert unit_of(by_header, {}, {"content-type": "application/json"}, "infer") is None
    assert unit_of(by_field, {"user_id": ""}, None, "predict") is None  # empty: no unit
    assert unit_of(by_field, {"user_id": None}, None, "predict") is None


@pytest.mark.parametrize("value", [True, {"a": 1}, [1], float("inf")])
def test_a_unit_value_that_is_not_a_string_or_number_is_a_400(value: Any) -> None:
    with pytest.raises(ValidationError, match="'user_id' \\(the experiment's unit key\\) must be a string or a number"):
        unit_of(experiment(), {"user_id": value}, None, "predict")


def test_records_carry_the_unit_digest_never_the_unit() -> None:
    exp = experiment()
    field = record_field(exp, assign(exp, "alice@example.com"), "alice@example.com")
    assert field["id"] == exp.id and field["variant"] in ("A", "B")
    assert field["unit"] == unit_digest("alice@example.com") and len(field["unit"]) == 16
    assert "alice" not in json.dumps(field)
    # Without a unit: the champion serves it, recorded with a null variant and unit
    assert assign(exp, None).name == "A"
    assert record_field(exp, assign(exp, None), None) == {"id": exp.id, "variant": None, "unit": None}


def test_predict_admits_top_level_strings_and_numbers_only() -> None:
    allowed = frozenset({"instances"})
    check_fields({"instances": [], "user_id": "u", "n": 3, "x": None}, allowed, ("instances",), scalar_extras=True)
    for bad in ({"a": 1}, [1], True, "x" * 257):
        with pytest.raises(ValidationError, match="unknown field\\(s\\) 'user_id'"):
            check_fields({"instances": [], "user_id": bad}, allowed, ("instances",), scalar_extras=True)


def test_the_experiment_config_reads_once_per_ttl_and_keeps_the_last_good_document() -> None:
    # Given experiment.json readable, then unreadable, then stopped, then gone
    now = [0.0]
    docs: list[Any] = [json.dumps(DOC).encode(), ConnectionError("S3 down"), json.dumps({**DOC, "status": "stopped"})]
    docs.append(None)
    errors: list[str] = []

    def fetch() -> Any:
        doc = docs.pop(0)
        if isinstance(doc, Exception):
            raise doc
        return doc

    config = ExperimentConfig(fetch, clock=lambda: now[0], on_error=errors.append)
    seen = []
    for _ in range(4):
        seen.append([config.running() for _ in range(100)][-1])
        now[0] += 20.0
    # Then S3 was read once per 20 s; the S3 failure kept the experiment running (no reshuffle for a TTL)
    assert config.reads == 4
    assert [e.id if e else None for e in seen] == [DOC["id"], DOC["id"], None, None]
    assert len(errors) == 1 and "S3 down" in errors[0]


# --- forwarding to a challenger ----------------------------------------------------------------------------


class FakeLambda:
    """A Lambda client answering as Lambda's Invoke API does (Lambda API reference, Invoke)."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.calls = answer, []  # type: ignore[var-annotated]

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return {**self.answer, "Payload": io.BytesIO(self.answer["Payload"])}


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "Rate Exceeded."}}, "Invoke")


def _read_timeout() -> Exception:
    from botocore.exceptions import ReadTimeoutError

    return ReadTimeoutError(endpoint_url="https://lambda.us-east-1.amazonaws.com")


EVENT = {"path": "/v1/models/breast-cancer:predict", "body": '{"instances": [], "user_id": "u"}'}
MARKER = {"id": DOC["id"], "variant": "B", "unit": "abc"}


def test_forward_invokes_the_pinned_version_synchronously_and_returns_its_response() -> None:
    response = {"statusCode": 200, "multiValueHeaders": {"X-Model-Version": ["4"]}, "body": "{}"}
    client = FakeLambda({"StatusCode": 200, "Payload": json.dumps(response).encode()})
    variant = experiment().variant("B")
    assert forward(client, variant, EVENT, MARKER) == response
    (call,) = client.calls
    assert (call["FunctionName"], call["Qualifier"], call["InvocationType"]) == ("fn", "9", "RequestResponse")
    assert json.loads(call["Payload"]) == {**EVENT, EXPERIMENT_MARKER: MARKER}


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": b'{"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 10.00 seconds"}',
            },
            502,
            "the experiment's variant B (model v4) failed: Sandbox.Timedout: Task timed out after 10.00 seconds",
        ),
        (_client_error("TooManyRequestsException"), 503, "the experiment's variant B (model v4) is throttled"),
        (_read_timeout(), 504, "the experiment's variant B (model v4) did not answer in time (ReadTimeoutError)"),
        (_client_error("ResourceNotFoundException"), 502, "the experiment's variant B (model v4) could not be invoked"),
        (_client_error("RequestTooLargeException"), 413, "the request is too large to forward to the experiment's"),
        ({"StatusCode": 200, "Payload": b"null"}, 502, "the experiment's variant B (model v4) answered something"),
    ],
)
def test_a_challenger_without_a_response_is_the_clients_error_naming_it(answer: Any, status: int, message: str) -> None:
    with pytest.raises(ChallengerError) as err:
        forward(FakeLambda(answer), experiment().variant("B"), EVENT, MARKER)
    assert err.value.status == status and str(err.value).startswith(message), str(err.value)
    assert err.value.variant.version == 4
    assert ("Retry-After" in err.value.headers) == (status == 503)


# --- feedback: a label, an outcome value, or both ----------------------------------------------------------


class _Store:
    """A model store serving a loaded classifier (feedback needs only its card and version)."""

    def get(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(
            card=SimpleNamespace(task="classification", classes=["benign", "malignant"]), version="1"
        )


def _service(lines: list[str]) -> Any:
    import logging

    from modeldeck.serving import CaptureEmitter, InferenceService, Settings

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.experiments.feedback")
    logger.handlers[:] = [Sink()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    settings = Settings.from_env({"MODEL_NAME": "m", "MODEL_VERSION": "1", "MODEL_BUCKET": "b", "MAX_ROWS": "3"})
    return InferenceService(settings, _Store(), CaptureEmitter(settings, logger))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "record"),
    [
        ({"id": "p1", "value": 1}, {"value": [1]}),
        ({"id": "p1", "value": [19.99, 0]}, {"value": [19.99, 0]}),
        ({"id": "p1", "label": "benign", "value": 0.5}, {"label": ["benign"], "value": [0.5]}),
        ({"id": "p1", "label": ["malignant"]}, {"label": ["malignant"]}),
    ],
)
def test_feedback_takes_a_label_a_value_or_both(body: dict[str, Any], record: dict[str, Any]) -> None:
    lines: list[str] = []
    out = _service(lines).feedback("m", body, "gw-1")
    (line,) = lines
    written = json.loads(line)
    assert {k: written[k] for k in ("kind", "id")} == {"kind": "feedback", "id": "p1"}
    assert {k: written[k] for k in ("label", "value") if k in written} == record
    assert out["prediction_id"] == "p1" and out["labels"] == len(record.get("label", []))
    assert out.get("values") == (len(record["value"]) if "value" in record else None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "p1"}, "send 'label', 'value' or both"),
        ({"id": "p1", "value": "12"}, "value: must be a finite number, got a string '12'"),
        ({"id": "p1", "value": True}, "value: must be a finite number, got a boolean"),
        ({"id": "p1", "value": [1, None]}, "value[1]: must be a finite number, got null"),
        ({"id": "p1", "value": 10**400}, "value: must be a finite number, got a number"),
        ({"id": "p1", "value": []}, "'value' is empty"),
        ({"id": "p1", "value": 1, "label": "maybe"}, "label: 'maybe' is not one of the model's classes"),
        ({"id": "p1", "value": 1, "revenue": 2}, "unknown field(s) 'revenue'; expected id, label, value"),
    ],
)
def test_invalid_feedback_values_are_400_naming_the_problem(body: dict[str, Any], message: str) -> None:
    lines: list[str] = []
    with pytest.raises(ValidationError) as err:
        _service(lines).feedback("m", body, None)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.status == 400 and lines == []


def test_too_many_feedback_values_is_413() -> None:
    from modeldeck.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="too many values: 4 \\(the limit is 3\\)"):
        _service([]).feedback("m", {"id": "p1", "value": [1, 2, 3, 4]}, None)
