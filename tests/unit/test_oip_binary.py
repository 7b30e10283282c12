"""The binary tensor data extension's encoding and decoding (modeldeck.oip_binary), against tritonclient's."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeck import oip_binary
from modeldeck.errors import ValidationError
from modeldeck.serving import RecordsFastPath, class_codes

http = pytest.importorskip("tritonclient.http")
from tritonclient.http import InferInput  # noqa: E402
from tritonclient.http._utils import _get_inference_request  # noqa: E402
from tritonclient.utils import deserialize_bytes_tensor  # noqa: E402


def decoded(inputs: list[Any]) -> dict[str, Any]:
    """A tritonclient request body as the handler decodes it."""
    body, length = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    header, data = oip_binary.split(body, length)
    parsed = json.loads(header)
    oip_binary.attach_inputs(parsed, data)
    return parsed


def test_bytes_tensors_decode_to_the_strings_a_json_client_sends() -> None:
    words = np.array([["benign"], [""], ["é ü"], ["x" * 300]], dtype=object)
    tensor = InferInput("band", [4, 1], "BYTES")
    tensor.set_data_from_numpy(words)
    (got,) = decoded([tensor])["inputs"]
    assert got["data"] == ["benign", "", "é ü", "x" * 300] and got["shape"] == [4, 1]


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT16", "BOOL"])
def test_numeric_tensors_decode_to_the_flat_row_major_values(datatype: str) -> None:
    values = (np.arange(12).reshape(2, 3, 2) % 2 == 1) if datatype == "BOOL" else np.arange(12).reshape(2, 3, 2)
    array = values.astype(oip_binary.DTYPES[datatype])
    tensor = InferInput("x", [2, 3, 2], datatype)
    tensor.set_data_from_numpy(array)
    (got,) = decoded([tensor])["inputs"]
    # The same flat data a JSON client would send, as a read-only view of the body (no copy)
    assert got["data"].tolist() == array.ravel().tolist() and not got["data"].flags.writeable
    assert oip_binary.as_json_inputs([got])[0]["data"] == array.ravel().tolist()


def test_a_bytes_element_running_past_its_tensor_is_400() -> None:
    raw = (5).to_bytes(4, "little") + b"abc"
    with pytest.raises(ValidationError, match="element 0 says 5 bytes but only 3 remain"):
        oip_binary.decode_bytes(memoryview(raw), 1, "input 'b'")
    with pytest.raises(ValidationError, match="2 bytes are left after its 1 elements"):
        oip_binary.decode_bytes(memoryview((1).to_bytes(4, "little") + b"abc"), 1, "input 'b'")
    with pytest.raises(ValidationError, match="is not UTF-8 text"):
        oip_binary.decode_bytes(memoryview((1).to_bytes(4, "little") + b"\xff"), 1, "input 'b'")


def test_bf16_and_unknown_datatypes_cannot_be_sent_in_binary() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "parameters": {"binary_data_size": 2}}]}
    with pytest.raises(ValidationError, match="datatype 'BF16' cannot be sent in binary here"):
        oip_binary.attach_inputs(body, memoryview(b"\0\0"))


def test_data_and_binary_data_size_together_are_400() -> None:
    body = {
        "inputs": [
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}}
        ]
    }
    with pytest.raises(ValidationError, match=r"has both 'data' and parameters\.binary_data_size"):
        oip_binary.attach_inputs(body, memoryview(b"\0" * 4))


@pytest.mark.parametrize("size", [-1, 1.5, True, "4"])
def test_a_binary_data_size_that_is_not_a_count_of_bytes_is_400(size: Any) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    with pytest.raises(ValidationError, match="binary_data_size must be a non-negative integer"):
        oip_binary.attach_inputs(body, memoryview(b"\0" * 4))


def test_outputs_are_binary_as_requested_per_output_or_for_all() -> None:
    names = ["label", "probabilities"]
    assert oip_binary.binary_outputs({"parameters": {"binary_data_output": True}}, names, None) == set(names)
    assert oip_binary.binary_outputs({}, names, None) == set()
    per_output = {"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}]}
    assert oip_binary.binary_outputs(per_output, names, ["label", "probabilities"]) == {"label"}
    # binary_data_output is the default of outputs that do not say
    mixed = {**per_output, "parameters": {"binary_data_output": True}}
    mixed["outputs"][0]["parameters"] = {"binary_data": False}
    assert oip_binary.binary_outputs(mixed, names, ["label", "probabilities"]) == {"probabilities"}
    with pytest.raises(ValidationError, match="binary_data_output must be true or false"):
        oip_binary.binary_outputs({"parameters": {"binary_data_output": "yes"}}, names, None)


def test_encoded_outputs_are_what_tritonclient_decodes() -> None:
    labels = np.array(["benign", "malignant"], dtype=object)
    raw = oip_binary.encode_tensor("BYTES", labels)
    assert deserialize_bytes_tensor(raw).tolist() == [b"benign", b"malignant"]
    # Labels encoded by class (the card's classes) are the same bytes; a label outside them has no codes.
    many = np.array(["malignant", "benign", "é", "benign"] * 8, dtype=object)
    codes = class_codes(many, ["benign", "malignant", "é"])
    assert codes is not None
    assert oip_binary.encode_classes(codes, ["benign", "malignant", "é"]) == oip_binary.encode_tensor("BYTES", many)
    assert deserialize_bytes_tensor(oip_binary.encode_tensor("BYTES", many)).tolist() == [v.encode() for v in many]
    assert class_codes(many, ["benign", "malignant"]) is None
    rng = np.random.default_rng(0)
    for classes in (["a", "bb", "", "dddd"], ["x", "y"], ["only"]):
        codes = rng.integers(0, len(classes), size=int(rng.integers(1, 50)))
        labels = np.array([classes[i] for i in codes], dtype=object)
        assert oip_binary.encode_classes(codes, classes) == oip_binary.encode_bytes(labels.tolist())
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    raw = oip_binary.encode_tensor("FP32", probabilities)
    assert np.frombuffer(raw, dtype="<f4").reshape(2, 2).tolist() == probabilities.tolist()


def test_the_openapi_document_describes_binary_infer_requests_and_responses() -> None:
    from modeldeck.openapi import document, spec_models

    operation = document(spec_models())["paths"]["/v2/models/breast-cancer/infer"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert [p["name"] for p in operation["parameters"]] == ["Inference-Header-Content-Length"]
    ok = operation["responses"]["200"]
    assert "application/octet-stream" in ok["content"] and "Inference-Header-Content-Length" in ok["headers"]
    # and only infer speaks it
    predict = document(spec_models())["paths"]["/v1/models/breast-cancer:predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/json"} and "parameters" not in predict


_DTYPES = ["FP16", "FP32", "FP64", "INT8", "INT32", "UINT16", "INT64"]


@pytest.mark.filterwarnings("ignore:overflow encountered")
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_binary_fast_path_never_disagrees_with_the_json_paths_schema(trained_demo: Any, data: Any) -> None:
    # Given the demo's inputs as binary tensors (numpy views) of random datatypes, values and shapes
    schema = trained_demo.card.schema
    n = data.draw(st.integers(1, 4))
    values = st.one_of(
        st.floats(-5, 150, width=32),
        st.sampled_from([0.5, 1.0, 20.0, 99.9, 100.0, 1e39, -1e-3, float("nan"), float("inf")]),
    )
    inputs = []
    for f in schema.features:
        datatype = data.draw(st.sampled_from(_DTYPES))
        raw = np.array(data.draw(st.lists(values, min_size=n, max_size=n)))
        with np.errstate(all="ignore"):
            array = raw.astype(oip_binary.DTYPES[datatype])
        shape = data.draw(st.sampled_from([[n], [n, 1]]))
        inputs.append({"name": f.name, "shape": shape, "datatype": datatype, "data": array})
    # When the fast path and the JSON path's schema (on the same data as JSON lists) both validate
    fast = RecordsFastPath(schema).oip_columns(inputs, 3)
    try:
        slow = schema.columns_from_oip(oip_binary.as_json_inputs(inputs), 3)
    except ValidationError:
        slow = None
    # Then the fast path only accepts what the schema accepts, with identical float32 columns
    if fast is not None:
        assert slow is not None and list(fast) == list(slow)
        for name in slow:
            assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape
            np.testing.assert_array_equal(fast[name], slow[name])
