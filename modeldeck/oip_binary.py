"""The Open Inference Protocol's binary tensor data extension (KServe v2 / Triton), requests and responses.

A binary request body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data of
each input whose ``parameters.binary_data_size`` is set, in the order of ``inputs``: little-endian, row-major,
no padding; a BYTES element is a 4-byte little-endian length and its bytes. An input without that parameter
keeps its JSON ``data`` (the extension allows mixing both). Responses carry the outputs the client asked for in
binary (``parameters.binary_data`` per requested output, or ``parameters.binary_data_output`` for all) the same
way, with the header's length in ``Inference-Header-Content-Length``.

Decoding never loops over values in Python for numeric tensors: each becomes a read-only ``np.frombuffer`` view of
the body (flat, row-major: exactly the ``data`` a JSON client would send), which the serving fast path casts and
checks in one pass; anything it cannot prove valid goes through :func:`as_json_inputs` to the JSON path, so both
encodings of a request give the same columns, or the same error message. Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from modeldeck.errors import ValidationError

HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
# Every OIP datatype but BF16 (numpy has no bfloat16), as the little-endian numpy dtype of its binary form.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}


def header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header as a number of bytes; None when it is absent."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ValidationError(f"{HEADER} must be a non-negative integer (the JSON header's length), got {value!r:.40}")
    return int(text)


def split(raw: bytes, length: int) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data after it, or the 400 that says why the body does not hold them."""
    if length == 0:
        raise ValidationError(f"{HEADER} is 0: the body must start with the JSON inference header")
    if length > len(raw):
        raise ValidationError(f"{HEADER} is {length} bytes but the body has only {len(raw)} bytes")
    view = memoryview(raw)
    return bytes(view[:length]), view[length:]


def _where(tensor: Mapping[str, Any], i: int) -> str:
    """How a message names an input: by its name, else by its position (only built for an error)."""
    name = tensor.get("name")
    return f"input {name!r:.60}" if isinstance(name, str) else f"inputs[{i}]"


def _elements(tensor: Mapping[str, Any], i: int) -> int:
    shape = tensor.get("shape")
    if type(shape) is list:
        count = 1
        for dim in shape:
            if type(dim) is not int or dim < 0:
                break
            count *= dim
        else:
            return count
    raise ValidationError(f"{_where(tensor, i)}: 'shape' must be a list of non-negative integers")


def decode_bytes(buf: memoryview, count: int, where: str) -> list[str]:
    """``count`` BYTES elements (4-byte little-endian length, then the bytes) as UTF-8 strings, filling ``buf``."""
    out: list[str] = []
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise ValidationError(f"{where}: the binary data ends inside element {i} of {count}")
        n = int.from_bytes(buf[pos : pos + 4], "little")
        pos += 4
        if pos + n > end:
            raise ValidationError(f"{where}: element {i} says {n} bytes but only {end - pos} remain")
        try:
            out.append(str(buf[pos : pos + n], "utf-8"))
        except UnicodeDecodeError:
            raise ValidationError(f"{where}: element {i} is not UTF-8 text") from None
        pos += n
    if pos != end:
        raise ValidationError(f"{where}: {end - pos} bytes are left after its {count} elements")
    return out


def attach_inputs(body: dict[str, Any], data: memoryview) -> None:
    """Put each binary input's data (from ``data``, the bytes after the JSON header) into its ``data`` field.

    A numeric tensor gets a flat read-only numpy view of the body in its datatype; a BYTES tensor a flat list of
    strings. Sizes are checked against the body and against shape × datatype before anything is read.
    """
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        if len(data):
            raise ValidationError("the body has binary tensor data but 'inputs' is not a list of tensors")
        return
    if inputs and _attach_uniform(inputs, data):
        return
    sized: list[tuple[dict[str, Any], int, int]] = []
    total = 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if type(tensor) is dict else None
        if params is None:
            continue  # JSON data (or not a tensor: the schema names the problem)
        if type(params) is not dict:
            raise ValidationError(f"{_where(tensor, i)}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise ValidationError(
                f"{_where(tensor, i)}: parameters.binary_data_size must be a non-negative integer, got {size!r:.40}"
            )
        if "data" in tensor:
            raise ValidationError(f"{_where(tensor, i)}: has both 'data' and parameters.binary_data_size; send one")
        sized.append((tensor, size, i))
        total += size
    if total != len(data):
        raise ValidationError(
            f"the inputs' binary_data_size add up to {total} bytes but {len(data)} bytes follow the "
            f"{HEADER} ({_header_note(body)})"
        )
    offset = 0
    views: list[tuple[dict[str, Any], int, int, np.dtype[Any]]] = []
    for tensor, size, i in sized:
        datatype = tensor.get("datatype")
        count = _elements(tensor, i)
        if datatype == "BYTES":
            tensor["data"] = decode_bytes(data[offset : offset + size], count, _where(tensor, i))
            offset += size
            continue
        dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise ValidationError(
                f"{_where(tensor, i)}: datatype {datatype!r:.20} cannot be sent in binary here; use one of "
                f"{', '.join([*DTYPES, 'BYTES'])}"
            )
        if size != count * dtype.itemsize:
            raise ValidationError(
                f"{_where(tensor, i)}: binary_data_size is {size} bytes but shape {tensor['shape']} of {datatype} "
                f"({dtype.itemsize} bytes each) is {count * dtype.itemsize} bytes"
            )
        views.append((tensor, offset, count, dtype))
        offset += size
    if views and len({dtype for _, _, _, dtype in views}) == 1 and len(views) == len(sized):
        # The usual request: every input binary, one datatype. One view of the whole body, sliced per input (each
        # frombuffer call costs more than a small tensor's data); with one count for all, the slices are the rows
        # of one (inputs, count) matrix, which the fast path then uses without a copy.
        whole = np.frombuffer(data, dtype=views[0][3])
        if len({count for _, _, count, _ in views}) == 1:
            whole = whole.reshape(len(views), views[0][2])
            for j, (tensor, _, _, _) in enumerate(views):
                tensor["data"] = whole[j]
            return
        size = views[0][3].itemsize
        for tensor, start, count, _ in views:
            tensor["data"] = whole[start // size : start // size + count]
        return
    for tensor, start, count, dtype in views:
        tensor["data"] = np.frombuffer(data, dtype=dtype, count=count, offset=start)


def _attach_uniform(inputs: list[Any], data: memoryview) -> bool:
    """The usual binary request (tritonclient's for a tabular model) in one pass: every input binary, of one
    numeric datatype and one shape, ``[n]`` or ``[n, 1]``, and their sizes adding up to the body. Each input gets
    a row of one (inputs, n) matrix over the body. False, having attached nothing, for anything else: the general
    path then checks the request and names its problem."""
    first = inputs[0]
    if type(first) is not dict:
        return False
    shape, dtype = first.get("shape"), DTYPES.get(first.get("datatype"))  # type: ignore[arg-type]
    if dtype is None or type(shape) is not list or not 1 <= len(shape) <= 2:
        return False
    n = shape[0]
    if type(n) is not int or n < 0 or (len(shape) == 2 and (type(shape[1]) is not int or shape[1] != 1)):
        return False
    datatype, size, int_dims = first["datatype"], n * dtype.itemsize, [int] * len(shape)
    for tensor in inputs:
        params = tensor.get("parameters") if type(tensor) is dict else None
        if (
            type(params) is not dict
            or type(params.get("binary_data_size")) is not int
            or params["binary_data_size"] != size
            or tensor.get("datatype") != datatype
            or type(tensor.get("shape")) is not list
            or tensor["shape"] != shape
            or list(map(type, tensor["shape"])) != int_dims  # equal, but 1.0 is not an int dimension
            or "data" in tensor
        ):
            return False
    if size * len(inputs) != len(data):
        return False
    whole = np.frombuffer(data, dtype=dtype).reshape(len(inputs), n)
    for tensor, row in zip(inputs, whole, strict=True):
        tensor["data"] = row
    return True


def _header_note(body: Mapping[str, Any]) -> str:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        return "no inputs"
    n = sum(1 for t in inputs if isinstance(t, dict) and "binary_data_size" in (t.get("parameters") or {}))
    return f"{n} binary input{'s' if n != 1 else ''}"


def has_binary(inputs: Any) -> bool:
    """Whether any input's data came from the binary part of the body (a numpy array)."""
    return isinstance(inputs, list) and any(
        isinstance(t, dict) and isinstance(t.get("data"), np.ndarray) for t in inputs
    )


def as_json_inputs(inputs: Any) -> Any:
    """The inputs as a JSON client would have sent them (numpy data as lists): for the schema's precise checks."""
    if not has_binary(inputs):
        return inputs
    return [
        {**t, "data": t["data"].tolist()} if isinstance(t, dict) and isinstance(t.get("data"), np.ndarray) else t
        for t in inputs
    ]


def binary_outputs(body: Mapping[str, Any], names: Sequence[str], requested: Iterable[str] | None) -> frozenset[str]:
    """The outputs to return in binary: each requested output's ``parameters.binary_data``, defaulting to the
    request's ``parameters.binary_data_output`` (which, with no ``outputs``, covers every output)."""
    params = body.get("parameters")
    default = params.get("binary_data_output", False) if isinstance(params, dict) else False
    if not isinstance(default, bool):
        raise ValidationError(f"parameters.binary_data_output must be true or false, got {default!r:.40}")
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        return frozenset(names if default else ())
    chosen: set[str] = set()
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            continue  # _requested_outputs names the problem
        params = out.get("parameters")
        flag = params.get("binary_data", default) if isinstance(params, dict) else default
        if not isinstance(flag, bool):
            raise ValidationError(f"output {out.get('name')!r:.60}: parameters.binary_data must be true or false")
        if flag:
            chosen.add(out["name"])
    return frozenset(chosen & set(requested if requested is not None else names))


def encode_bytes(values: Iterable[Any]) -> bytes:
    """BYTES elements in binary: each a 4-byte little-endian length and its UTF-8 bytes."""
    values = list(values)
    # Each distinct value is encoded once (labels repeat a handful of classes); the join runs in C.
    table = {v: _element(v) for v in set(values)}
    return b"".join(map(table.__getitem__, values))


def encode_classes(codes: np.ndarray, classes: Sequence[Any]) -> bytes:
    """``encode_bytes`` of the labels whose class indices are ``codes``, gathered by numpy from the classes'
    encodings (no Python object per row): each row takes its class's encoding from a zero-padded table, and
    its class's mask drops the padding."""
    table, mask = _class_table(tuple(classes))
    return bytes(np.take(table, codes, axis=0)[np.take(mask, codes, axis=0)].data)


@lru_cache(maxsize=64)
def _class_table(classes: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
    elements = [_element(c) for c in classes]
    width = max(len(e) for e in elements)
    table = np.zeros((len(elements), width), dtype=np.uint8)
    mask = np.zeros((len(elements), width), dtype=bool)
    for i, e in enumerate(elements):
        table[i, : len(e)] = np.frombuffer(e, dtype=np.uint8)
        mask[i, : len(e)] = True
    return table, mask


def _element(value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return len(raw).to_bytes(4, "little") + raw


def encode_tensor(datatype: str, array: np.ndarray) -> bytes:
    """An output tensor's binary data (row-major, little-endian, in ``datatype``)."""
    if datatype == "BYTES":
        return encode_bytes(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def response(header: bytes, tensors: Sequence[bytes]) -> bytes:
    """A binary response body: the JSON header, then each binary output's data in the order of ``outputs``."""
    return b"".join([header, *tensors])
