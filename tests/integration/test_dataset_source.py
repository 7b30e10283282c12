"""The card records a dataset path as the spec wrote it (relative to the spec), with its hash: never the
training machine's absolute path (issue 13.10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from modeldeck.localcloud import LocalCloud
from modeldeck.registry import Registry
from modeldeck.spec import spec_dir, spec_payload
from training.steps import STEPS, StepContext, run_step

TOY_SPEC = (
    'name = "toy"\n[dataset]\nsource = "data/toy.csv"\ntarget = "y"\n'
    '[estimator]\nclass = "sklearn.linear_model.LogisticRegression"\n'
    '[[features]]\nname = "x"\ntype = "numeric"\n'
)


def _toy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    (tmp_path / "data").mkdir()
    pd.DataFrame({"x": x, "y": np.where(x > 0, "up", "down")}).to_csv(tmp_path / "data" / "toy.csv", index=False)
    spec = tmp_path / "toy.toml"
    spec.write_text(TOY_SPEC)
    return spec


def test_the_execution_input_keeps_the_dataset_path_as_written(tmp_path: Path) -> None:
    # Given a spec whose dataset is a path relative to the spec file
    spec = _toy(tmp_path)
    # When it becomes a training execution's input
    payload = spec_payload(spec)
    # Then the path is as written, and the spec's directory travels separately
    assert payload["dataset"]["source"] == "data/toy.csv"
    assert spec_dir(spec) == str(tmp_path.resolve())


def test_the_card_records_the_relative_path_and_the_hash(cloud: LocalCloud, registry: Registry, tmp_path: Path) -> None:
    # Given a spec with a relative CSV path, trained through the pipeline's steps with its spec_dir
    spec = _toy(tmp_path)
    ctx = StepContext(cloud.client("s3"), cloud.bucket)
    event = {"model": "toy", "run_id": "run-1", "spec": spec_payload(spec), "spec_dir": spec_dir(spec)}
    for step in STEPS:
        run_step({**event, "step": step}, ctx)
    # When its card is read back
    card = registry.get_card("toy", 1)
    # Then the source is the path relative to the spec, with the data's sha256; no absolute path of this machine
    assert card.dataset["source"] == "data/toy.csv"
    assert len(card.dataset["sha256"]) == 64
    assert str(tmp_path) not in json.dumps(card.to_dict())
