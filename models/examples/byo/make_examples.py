"""Builds the bring-your-own examples of README "Bring your own model" (run from the repository root):

    .venv/bin/python models/examples/byo/make_examples.py

- ``digits-mlp``: a scikit-learn MLPClassifier trained on the 8x8 digits, written as an ONNX graph by hand
  with ``onnx.helper`` (Flatten, MatMul, Add, Relu, MatMul, Add: logits), as a framework exporter would; the
  spec reads the logits through softmax. Reference and holdout are ``.npy``/``.npz``.
- ``iris-byo``: a scikit-learn LogisticRegression converted with skl2onnx into one packed ``[N, 4]`` input.
  Reference and holdout are CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent


def digits() -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["z0"]),
        helper.make_node("Add", ["z0", "B2"], ["logits"]),
    ]
    weights = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))]
    graph = helper.make_graph(
        nodes,
        "digits-mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_examples.py")
    model.producer_version = "1"
    model.ir_version = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 would stamp 14
    (HERE / "digits-mlp.onnx").write_bytes(model.SerializeToString())
    images = x.reshape(-1, 1, 8, 8)
    np.save(HERE / "digits-reference.npy", images[:300])
    holdout = images[1200:1400]
    logits = np.maximum(holdout.reshape(len(holdout), -1) @ w1 + b1, 0) @ w2 + b2
    np.savez(HERE / "digits-holdout.npz", pixels=holdout, logits=logits, target=y[1200:1400].astype(str))


def iris() -> None:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17)
    onx.ir_version = 8
    (HERE / "iris-byo.onnx").write_bytes(onx.SerializeToString())
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(x, columns=names)
    frame.to_csv(HERE / "iris-reference.csv", index=False)
    holdout = frame.iloc[1::3].reset_index(drop=True)
    proba = clf.predict_proba(x[1::3])
    holdout["label"] = clf.predict(x[1::3])
    for j in range(proba.shape[1]):
        holdout[f"probabilities[{j}]"] = proba[:, j]
    holdout["target"] = y[1::3]
    holdout.to_csv(HERE / "iris-holdout.csv", index=False)


if __name__ == "__main__":
    digits()
    iris()
