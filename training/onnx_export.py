"""Converting the whole Pipeline to ONNX, and the parity gate that must pass before registration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.pipeline import Pipeline

from modeldeck.errors import ParityError, SpecError
from modeldeck.schema import MISSING_CATEGORY, FeatureSchema
from modeldeck.spec import BOOSTER_ESTIMATORS, ModelSpec

# Pinned so a library upgrade cannot silently change the graph a Lambda runs.
OPSET = {"": 18, "ai.onnx.ml": 3}
PROBA_TOLERANCE = 1e-5
# The estimators whose conversion and parity the tests prove (tests/unit/test_training.py runs each).
TESTED_ESTIMATORS = (
    "sklearn.linear_model.LogisticRegression",
    "sklearn.ensemble.RandomForestClassifier",
    "sklearn.ensemble.GradientBoostingClassifier",
    "sklearn.ensemble.RandomForestRegressor",
)


def convert(pipeline: Pipeline, spec: ModelSpec) -> bytes:
    """The fitted pipeline as one ONNX graph: one named input per raw input, dynamic batch, no ZipMap.

    The spec's derivations are part of the graph (see :func:`prepend_derivations`), so the graph's inputs
    are ``spec.input_schema``'s, what clients send.
    """
    schema, name = spec.schema, spec.name
    inputs = [
        (f.name, FloatTensorType([None, 1]) if f.numeric else StringTensorType([None, 1])) for f in schema.features
    ]
    if spec.estimator.class_path in BOOSTER_ESTIMATORS:
        import training.boosters  # noqa: F401 (registers onnxmltools' converters into skl2onnx)
    estimator = pipeline.named_steps["estimator"]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    try:
        model = to_onnx(
            pipeline, initial_types=inputs, options=options, target_opset=OPSET, naming=name.replace("-", "_") + "_"
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, MissingShapeCalculator...
        # skl2onnx's messages can run to pages (a dict of every registered converter): give the type and a
        # short first line only, so the sentence that matters is never cut.
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f": {detail}" if detail and len(detail) <= 120 else ""
        raise SpecError(
            f"estimator.class: {spec.estimator.class_path} cannot be converted to ONNX by skl2onnx "
            f"({type(exc).__name__}{detail}). Tested estimators: "
            + ", ".join(c.rsplit(".", 1)[1] for c in TESTED_ESTIMATORS)
        ) from None
    model.doc_string = ""
    return prepend_derivations(model, spec.input_schema).SerializeToString()


def prepend_derivations(model: onnx.ModelProto, inputs: FeatureSchema) -> onnx.ModelProto:
    """``model`` with each of ``inputs.derived`` computed in the graph from its raw source input.

    Per derivation, the bin index is the number of edges the source (cast to double, so the comparison is
    the one pandas makes on the float32 value) is greater than: right-closed bins. A NaN source is greater
    than nothing, including -inf, which selects the missing category. ``Gather`` then picks the label from
    ``[MISSING_CATEGORY, *labels]``. The graph's inputs become ``inputs.features``, in that order.
    """
    graph = model.graph
    existing = {i.name: i for i in graph.input}
    nodes: list[onnx.NodeProto] = []
    for d in inputs.derived:
        p = f"derive_{d.name}_"
        graph.initializer.extend(
            [
                helper.make_tensor(p + "edges", TensorProto.DOUBLE, [1, len(d.bins)], list(d.bins)),
                helper.make_tensor(p + "axes", TensorProto.INT64, [1], [1]),
                helper.make_tensor(p + "neg_inf", TensorProto.DOUBLE, [], [-np.inf]),
                helper.make_tensor(p + "one", TensorProto.INT64, [], [1]),
                helper.make_tensor(p + "zero", TensorProto.INT64, [], [0]),
                numpy_helper.from_array(np.array([MISSING_CATEGORY, *d.labels], dtype=object), p + "labels"),
            ]
        )
        nodes += [
            helper.make_node("Cast", [d.source], [p + "x"], to=TensorProto.DOUBLE, name=p + "cast"),
            helper.make_node("Greater", [p + "x", p + "edges"], [p + "above"], name=p + "above"),
            helper.make_node("Cast", [p + "above"], [p + "above_int"], to=TensorProto.INT64, name=p + "count_cast"),
            helper.make_node("ReduceSum", [p + "above_int", p + "axes"], [p + "bin"], keepdims=1, name=p + "bin"),
            helper.make_node("Add", [p + "bin", p + "one"], [p + "slot"], name=p + "slot"),
            helper.make_node("Greater", [p + "x", p + "neg_inf"], [p + "present"], name=p + "present"),
            helper.make_node("Where", [p + "present", p + "slot", p + "zero"], [p + "index"], name=p + "index"),
            helper.make_node("Gather", [p + "labels", p + "index"], [d.name], axis=0, name=p + "label"),
        ]
    new_inputs = [
        existing[f.name] if f.name in existing else helper.make_tensor_value_info(f.name, TensorProto.FLOAT, [None, 1])
        for f in inputs.features
    ]
    del graph.input[:]
    graph.input.extend(new_inputs)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *old_nodes])
    return model


def opset_of(model_bytes: bytes) -> dict[str, int]:
    model = onnx.load_from_string(model_bytes)
    return {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}


@dataclass(frozen=True)
class ParityReport:
    rows: int
    label_agreement: float
    max_abs_diff: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "label_agreement": self.label_agreement,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
        }


def check_parity(
    pipeline: Pipeline,
    outputs: list[np.ndarray],
    frame: Any,
    task: str,
    target_scale: float = 1.0,
    tolerance: float = PROBA_TOLERANCE,
) -> ParityReport:
    """sklearn and onnxruntime must agree on every holdout row; otherwise raise ParityError.

    Classifiers: 100% of labels, probabilities within ``tolerance`` (absolute). Regressors: predictions
    within ``tolerance`` relative to the target's scale (its standard deviation). ``frame`` holds the
    derived features training computed, while ``outputs`` come from the graph run on the raw inputs, so
    the gate checks the in-graph derivations too.
    """
    rows = len(frame)
    if task == "classification":
        sk_labels = pipeline.predict(frame)
        sk_proba = pipeline.predict_proba(frame)
        ox_labels, ox_proba = outputs[0].ravel(), outputs[1].astype(np.float64)
        label_ok = sk_labels == ox_labels
        per_row = np.abs(sk_proba - ox_proba).max(axis=1)
        allowed = tolerance
    else:
        sk_pred = pipeline.predict(frame).astype(np.float64).ravel()
        ox_pred = outputs[0].astype(np.float64).ravel()
        label_ok = np.ones(rows, dtype=bool)
        per_row = np.abs(sk_pred - ox_pred)
        allowed = tolerance * max(target_scale, 1e-12)
    bad = np.flatnonzero(~label_ok | (per_row > allowed))
    report = ParityReport(rows, float(label_ok.mean()), float(per_row.max(initial=0.0)), allowed)
    if bad.size:
        worst = bad[np.argsort(-per_row[bad], kind="stable")][:5]
        detail = "; ".join(
            f"row {int(r)}: "
            + (f"sklearn {sk_labels[r]!r} vs onnx {ox_labels[r]!r}, " if task == "classification" else "")
            + f"|diff| {per_row[r]:.3g}"
            for r in worst
        )
        raise ParityError(
            f"parity gate failed on {bad.size} of {rows} holdout rows (labels agree "
            f"{report.label_agreement:.2%}, max |diff| {report.max_abs_diff:.3g} > {allowed:.3g}). "
            f"Worst: {detail}. Nothing was registered."
        )
    return report
