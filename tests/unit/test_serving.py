"""Pure serving logic: settings, body parsing, the model store's loading and back-off, the OpenAPI table."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeck.errors import PayloadTooLarge, ValidationError
from modeldeck.onnxmodel import Prediction
from modeldeck.openapi import ROUTES, document, match, spec_models
from modeldeck.schema import Feature, FeatureSchema
from modeldeck.serving import (
    ConfigError,
    ModelStore,
    NotReady,
    RecordsFastPath,
    Settings,
    ShadowConfig,
    ShadowTarget,
    UnsupportedMediaType,
    class_codes,
    class_counts,
    mirror,
    parse_json_body,
    prediction_score,
    request_id,
)

ENV = {"MODEL_NAME": "m", "MODEL_VERSION": "3", "MODEL_BUCKET": "b"}


def test_settings_defaults() -> None:
    s = Settings.from_env(ENV)
    assert (s.model_name, s.model_version, s.model_bucket) == ("m", 3, "b")
    assert s.max_rows == 1000 and s.max_body_bytes == 6 * 1024 * 1024
    assert s.capture_sample_rate == 1.0 and s.capture_redact == frozenset()


def test_settings_parse_every_variable() -> None:
    s = Settings.from_env(
        {**ENV, "MAX_ROWS": "50", "MAX_BODY_BYTES": "4096", "CAPTURE_SAMPLE_RATE": "0.1", "CAPTURE_REDACT": " a, b ,,"}
    )
    assert (s.max_rows, s.max_body_bytes, s.capture_sample_rate) == (50, 4096, 0.1)
    assert s.capture_redact == {"a", "b"}


def test_invalid_settings_report_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"MODEL_VERSION": "v2", "MAX_ROWS": "0", "CAPTURE_SAMPLE_RATE": "x"})
    assert str(err.value) == (
        "invalid inference settings: MODEL_NAME is required; MODEL_BUCKET is required; MODEL_VERSION must be a "
        "version number (0 = none released yet), got 'v2'; MAX_ROWS must be between 1 and 1e+06, got 0; "
        "CAPTURE_SAMPLE_RATE must be a number, got 'x'"
    )
    assert err.value.status == 503


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"body": "{}", "content_type": "text/plain"}, UnsupportedMediaType, "unsupported Content-Type 'text/plain'"),
        ({"body": None}, ValidationError, "the request body is empty"),
        ({"body": "x" * 2000}, PayloadTooLarge, "the request body is 2000 bytes; the limit is 1024"),
        (
            {"body": base64.b64encode(b"x" * 2000).decode(), "base64_encoded": True},
            PayloadTooLarge,
            "the request body is larger than 1024 bytes",
        ),
        ({"body": "%%%", "base64_encoded": True}, ValidationError, "malformed base64 body"),
        ({"body": '{"a": Infinity}'}, ValidationError, "malformed JSON: Infinity is not valid JSON"),
        (
            {"body": "[" * 50_000 + "]" * 50_000, "max_bytes": 200_000},
            ValidationError,
            "malformed JSON: nested too deeply",
        ),
        ({"body": "null"}, ValidationError, "the body must be a JSON object, got null"),
    ],
)
def test_parse_json_body_rejects_precisely(kwargs: dict[str, Any], error: type, message: str) -> None:
    args = {"base64_encoded": False, "content_type": "application/json", "max_bytes": 1024} | kwargs
    body = args.pop("body")
    with pytest.raises(error) as err:
        parse_json_body(body, **args)
    assert str(err.value).startswith(message)
    assert type(err.value) is error


def test_parse_json_body_accepts_json_and_base64() -> None:
    assert parse_json_body('{"a": 1}', base64_encoded=False, content_type=None, max_bytes=100) == {"a": 1}
    raw = base64.b64encode(b'{"a": 2}').decode()
    assert parse_json_body(raw, base64_encoded=True, content_type="application/json", max_bytes=100) == {"a": 2}


@pytest.mark.parametrize(
    ("labels", "classes", "expected"),
    [
        (["b", "a", "b"], ["a", "b", "c"], {"a": 1, "b": 2}),
        (["b", "a", "b"], None, {"a": 1, "b": 2}),
        # A label outside the card's classes (a bring-your-own graph's own label output) is still counted.
        (["b", "z", "b"], ["a", "b"], {"z": 1, "b": 2}),
        ([1, 0, 1, 1], [0, 1], {"0": 1, "1": 3}),
        # Classes of another type than the labels: counted as they came, not matched by equality.
        ([1.0, 0.0], [0, 1], {"1.0": 1, "0.0": 1}),
        (["a"], ["a", "b"], {"a": 1}),
        ([str(i % 40) for i in range(200)], [str(i) for i in range(40)], {str(i): 5 for i in range(40)}),
    ],
)
def test_class_counts(labels: list[Any], classes: list[Any] | None, expected: dict[str, int]) -> None:
    # New str objects per row, as onnxruntime makes them (the pass per class must not rely on identity).
    fresh = np.array([x.encode().decode() if isinstance(x, str) else x for x in labels], dtype=object)
    assert class_counts(fresh, classes) == expected


def test_class_codes_take_the_argmax_only_when_every_label_agrees() -> None:
    classes = ["benign", "malignant"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8]] * 10, dtype=np.float32)
    labels = np.array(["benign", "malignant"] * 10, dtype=object)
    assert class_codes(labels, classes, proba).tolist() == [0, 1] * 10
    # A graph whose label is not its argmax (a threshold of its own): coded from the labels, never the guess.
    labels[3] = "benign"
    assert class_codes(labels, classes, proba).tolist() == [0, 1, 0, 0] + [0, 1] * 8
    labels[5] = "neither"
    assert class_codes(labels, classes, proba) is None
    assert class_codes(labels[:4], classes, proba[:4]) is None  # too few rows to be worth coding


def test_class_counts_of_integer_labels() -> None:
    labels = np.array([2, 0, 2, 2], dtype=np.int64)  # onnxruntime's labels for integer classes
    assert class_counts(labels, [0, 1, 2]) == {"0": 1, "2": 3}
    assert class_counts(labels, [0, 1]) == {"0": 1, "2": 3}  # a label outside the classes: counted as it came


@pytest.mark.parametrize("backend", ["pybase64", "base64"])
def test_fast_base64_matches_the_standard_library(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    from modeldeck import fastbase64

    if backend == "base64":
        monkeypatch.setitem(sys.modules, "pybase64", None)  # not installed: the fallback
    module = importlib.reload(fastbase64)
    try:
        data = bytes(range(256)) * 40
        text = base64.b64encode(data).decode()
        assert module.b64encode(data) == text
        assert module.b64decode(text, validate=True) == data
        for bad in ("%%%", "YWJ", "YW=j", "YWJj\n"):
            with pytest.raises(ValueError):
                module.b64decode(bad, validate=True)
    finally:
        monkeypatch.undo()
        importlib.reload(fastbase64)


def test_request_ids() -> None:
    assert request_id("client", "gw") == "client"
    assert request_id(None, "gw") == "gw"
    assert len(request_id(None, None)) == 36
    for bad in (7, "", "x" * 257):
        with pytest.raises(ValidationError):
            request_id(bad, "gw")


def test_prediction_score() -> None:
    binary = Prediction(np.array(["a", "b"]), np.array([[0.9, 0.1], [0.3, 0.7]], dtype=np.float32))
    multi = Prediction(np.array(["a"]), np.array([[0.2, 0.5, 0.3]], dtype=np.float32))
    regression = Prediction(np.array([1.0, 3.0]), None)
    assert prediction_score(binary) == pytest.approx(0.4)
    assert prediction_score(multi) == pytest.approx(0.5)
    assert prediction_score(regression) == 2.0


class FakeRegistry:
    """Fails ``failures`` times, then answers; counts calls. Loading sleeps briefly to expose races."""

    def __init__(self, card: Any, onnx: bytes, failures: int = 0) -> None:
        self.card, self.onnx, self.failures, self.calls = card, onnx, failures, 0

    def get_card(self, name: str, version: int) -> Any:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("S3 is down")
        time.sleep(0.01)
        return self.card

    def get_model_bytes(self, card: Any) -> bytes:
        return self.onnx


@pytest.fixture
def card_v1(trained_demo: Any) -> Any:
    from dataclasses import replace

    return replace(trained_demo.card, version=1)


def test_the_store_loads_once_under_concurrent_first_requests(card_v1: Any, trained_demo: Any) -> None:
    registry = FakeRegistry(card_v1, trained_demo.onnx)
    store = ModelStore(Settings("breast-cancer", 1, "b"), lambda: registry)
    loaded: list[Any] = []
    threads = [threading.Thread(target=lambda: loaded.append(store.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.calls == 1 and len({id(m) for m in loaded}) == 1
    assert loaded[0].metadata["versions"] == ["1"]


def test_the_store_backs_off_exponentially_and_recovers(card_v1: Any, trained_demo: Any) -> None:
    now = [0.0]
    registry = FakeRegistry(card_v1, trained_demo.onnx, failures=3)
    store = ModelStore(
        Settings("breast-cancer", 1, "b"), lambda: registry, backoff=1.0, max_backoff=3.0, clock=lambda: now[0]
    )
    delays = []
    for _ in range(3):
        with pytest.raises(NotReady) as err:
            store.get()
        delays.append(err.value.headers["Retry-After"])
        with pytest.raises(NotReady):
            store.get()  # within the back-off: no registry call
        now[0] += 10
    assert delays == ["1", "2", "3"] and registry.calls == 3
    assert store.get().version == "1" and registry.calls == 4


def test_the_store_rejects_a_card_for_another_version(card_v1: Any, trained_demo: Any) -> None:
    store = ModelStore(Settings("breast-cancer", 2, "b"), lambda: FakeRegistry(card_v1, trained_demo.onnx))
    with pytest.raises(NotReady, match="the card at breast-cancer v2 describes breast-cancer v1"):
        store.get()


def test_the_route_table_matches_paths() -> None:
    route, params = match("POST", "/v1/models/breast-cancer:predict")
    assert route is not None and route.operation_id == "predict" and params == {"name": "breast-cancer"}
    route, params = match("POST", "/v1/models/a:b:feedback")
    assert route is not None and route.operation_id == "feedback" and params == {"name": "a:b"}
    assert match("GET", "/v1/models/x:predict") == (None, {})
    assert match("GET", "/v2/models/x/y") == (None, {})


def test_the_openapi_document_covers_every_route_with_its_errors() -> None:
    doc = document(spec_models(), "http://127.0.0.1:8080")
    assert doc["openapi"].startswith("3.") and doc["servers"] == [{"url": "http://127.0.0.1:8080"}]
    for route in ROUTES:
        operation = doc["paths"][route.path.replace("{name}", "breast-cancer")][route.method.lower()]
        assert str(route.status) in operation["responses"]
        for status in route.errors:
            schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
    assert {r.response for r in ROUTES} <= set(doc["components"]["schemas"])


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 200),
    st.text(max_size=3),
    st.floats(allow_nan=False, allow_infinity=False, width=32, min_value=-1, max_value=120),
    st.sampled_from(["small", "medium", "large", ""]),
)


def _with_a_category(schema: FeatureSchema) -> FeatureSchema:
    """The demo's inputs plus a raw categorical one (the demo derives its category inside the model)."""
    band = Feature("band", "categorical", values=("small", "medium", "large"))
    return replace(schema, features=(*schema.features, band))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_fast_path_never_disagrees_with_the_schema(trained_demo: Any, data: Any) -> None:
    # Given records that are mostly valid demo rows with random values swapped in
    schema = _with_a_category(trained_demo.card.schema)
    base = {f.name: (0.5 if f.numeric else "medium") for f in schema.features}
    n = data.draw(st.integers(1, 4))
    records = []
    for _ in range(n):
        row = dict(base)
        for name in data.draw(st.lists(st.sampled_from(schema.names), max_size=3)):
            row[name] = data.draw(_VALUES)
        if data.draw(st.integers(0, 20)) == 0:
            row.pop(schema.names[0])
        records.append(row)
    # When both validate
    fast = RecordsFastPath(schema).columns(records, 3)
    try:
        slow = schema.columns_from_records(records, 3)
    except ValidationError:
        slow = None
    # Then the fast path only accepts what the schema accepts, with identical columns
    if fast is not None:
        assert slow is not None and list(fast) == list(slow)
        for name in slow:
            assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape
            assert (fast[name] == slow[name]).all()


def test_the_fast_path_takes_plainly_valid_rows(trained_demo: Any) -> None:
    from tests.fixtures.inference import ROW

    assert RecordsFastPath(trained_demo.card.schema).columns([ROW, ROW], 10) is not None


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_oip_fast_path_never_disagrees_with_the_schema(trained_demo: Any, data: Any) -> None:
    # Given OIP tensors of mostly valid demo rows, with random values, datatypes and shapes swapped in
    from tests.fixtures.inference import ROW, oip_inputs

    schema = _with_a_category(trained_demo.card.schema)
    n = data.draw(st.integers(1, 4))
    tensors = oip_inputs([{**ROW, "band": "medium"}] * n)
    for tensor in data.draw(st.lists(st.sampled_from(tensors), max_size=3)):
        change = data.draw(st.sampled_from(["value", "datatype", "shape", "nested", "drop"]))
        if change == "value":
            tensor["data"] = [*tensor["data"][:-1], data.draw(_VALUES)]
        elif change == "datatype":
            tensor["datatype"] = data.draw(st.sampled_from(["FP32", "INT64", "BYTES", "FP64", 7]))
        elif change == "shape":
            tensor["shape"] = data.draw(st.sampled_from([[n], [n, 1], [n + 1], [n, 2], [True], "n"]))
        elif change == "nested":
            tensor["data"] = [[v] for v in tensor["data"]]
        else:
            tensors = [t for t in tensors if t is not tensor]
    # When both validate
    fast = RecordsFastPath(schema).oip_columns(tensors, 3)
    try:
        slow = schema.columns_from_oip(tensors, 3)
    except ValidationError:
        slow = None
    # Then the fast path only accepts what the schema accepts, with identical columns
    if fast is not None:
        assert slow is not None and list(fast) == list(slow)
        for name in slow:
            assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape
            assert (fast[name] == slow[name]).all()


def test_the_oip_fast_path_takes_plainly_valid_tensors(trained_demo: Any) -> None:
    from tests.fixtures.inference import ROW, oip_inputs

    assert RecordsFastPath(trained_demo.card.schema).oip_columns(oip_inputs([ROW, ROW]), 10) is not None


def test_shadow_config_reads_once_per_ttl_and_fails_closed() -> None:
    # Given a shadow.json that appears, breaks, then disappears
    now = [0.0]
    docs: list[Any] = [
        None,
        b'{"function_name": "f", "qualifier": 3, "model_version": 2}',
        b"not json",
        ConnectionError("S3 down"),
    ]
    errors: list[str] = []

    def fetch() -> bytes | None:
        doc = docs.pop(0)
        if isinstance(doc, Exception):
            raise doc
        return doc

    config = ShadowConfig(fetch, ttl=20.0, clock=lambda: now[0], on_error=errors.append)
    # When asked many times within each TTL
    seen = []
    for _ in range(4):
        seen.append([config.target() for _ in range(50)][-1])
        now[0] += 20.0
    # Then S3 was read once per TTL; missing, malformed and unreadable all mean "no shadow"
    assert config.reads == 4
    assert seen == [None, ShadowTarget("f", "3", "2"), None, None]
    assert len(errors) == 2 and "S3 down" in errors[1]


def test_mirror_sends_the_event_with_the_live_id_as_an_async_invoke() -> None:
    calls: list[dict[str, Any]] = []

    class FakeLambda:
        def invoke(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    event = {"path": "/v1/models/m:predict", "body": '{"instances": []}'}
    assert mirror(FakeLambda(), ShadowTarget("fn", "4"), event, "req-1")
    (call,) = calls
    assert (call["FunctionName"], call["Qualifier"], call["InvocationType"]) == ("fn", "4", "Event")
    assert json.loads(call["Payload"]) == {**event, "modeldeck_shadow": {"id": "req-1"}}
    assert not mirror(FakeLambda(), ShadowTarget("fn", "4"), {"body": "x" * 300_000}, "req-2")
    assert len(calls) == 1


def _numbers_schema(n: int = 9) -> FeatureSchema:
    return FeatureSchema(tuple(Feature(f"f{i}", "numeric", min=0.0 if i == 0 else None) for i in range(n)))


def test_a_long_list_of_missing_features_says_how_many_more_there_are() -> None:
    # Given a row that gives none of nine features
    with pytest.raises(ValidationError) as err:
        _numbers_schema().columns_from_records([{}], 10)
    # Then five are named and the rest counted, so none is silently dropped
    assert str(err.value) == "instances[0]: missing feature(s) 'f0', 'f1', 'f2', 'f3', 'f4' and 4 more"


def test_value_messages_name_the_feature_once_and_a_one_sided_range_in_words() -> None:
    schema = _numbers_schema(1)
    with pytest.raises(ValidationError) as err:
        schema.columns_from_records([{"f0": -1.0}], 10)
    assert str(err.value) == "instances[0].f0 = -1 is below the minimum 0.0"
    with pytest.raises(ValidationError) as err:
        schema.columns_from_arrays({"f0": [1.0, float("inf")]})
    assert str(err.value) == "row 1: 'f0' must be finite, got inf"
