"""The CLI end to end on the local cloud: train, list, show, diff; errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldeck.cli import main
from tests.conftest import DEMO_SPEC


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def run(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--state-dir", str(state), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_list_show_and_diff_across_commands(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, state, "--json", "train", str(DEMO_SPEC))
    assert code == 0
    trained = json.loads(out)
    assert trained["created"] and trained["card"]["version"] == 1

    # A second spec (another C) registers v2 in a later command: the state persisted.
    spec2 = tmp_path / "models" / "breast-cancer.toml"
    spec2.parent.mkdir()
    spec2.write_text(DEMO_SPEC.read_text().replace("C = 1.0", "C = 0.2"))
    code, out, _ = run(capsys, state, "train", str(spec2))
    assert code == 0 and "registered v2" in out

    code, out, _ = run(capsys, state, "--json", "models", "list")
    assert [row["version"] for row in json.loads(out)] == [1, 2]

    code, out, _ = run(capsys, state, "models", "show", "breast-cancer", "1")
    assert code == 0 and "breast-cancer v1" in out and "roc_auc" in out
    # The card lists the raw inputs clients send and the feature the model derives from one of them
    assert "mean_area:num" in out and "size_band:cat" not in out and "size_band from mean_area" in out

    code, out, _ = run(capsys, state, "--json", "models", "diff", "breast-cancer", "1", "2")
    result = json.loads(out)
    assert code == 0 and result["old"] == 1 and result["new"] == 2 and 0.9 <= result["agreement"] <= 1.0

    code, out, _ = run(capsys, state, "models", "diff", "breast-cancer", "1", "2")
    assert "prediction agreement" in out and "gate: v2" in out


def test_retraining_the_same_spec_does_not_create_a_version(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    run(capsys, state, "train", str(DEMO_SPEC))
    code, out, _ = run(capsys, state, "train", str(DEMO_SPEC))
    assert code == 0 and "already registered" in out and "v1" in out


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace('type = "categorical"', 'type = "text"'), "features[9].type"),
        (lambda s: s.replace('target = "target"', 'target = "diagnosis"'), "missing target column(s) 'diagnosis'"),
        (
            lambda s: s.replace("sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Nope"),
            "unknown estimator",
        ),
    ],
)
def test_bad_specs_fail_in_one_line_and_write_nothing(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path, edit: object, expected: str
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(edit(DEMO_SPEC.read_text()))  # type: ignore[operator]
    code, _out, err = run(capsys, state, "train", str(spec))
    assert code == 1
    assert expected in err and "Traceback" not in err
    assert not (state / "s3").exists() or not any((state / "s3").rglob("*.json"))


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["models", "show", "breast-cancer", "vX"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a version number" in err


def test_unknown_model_is_a_one_line_error(capsys: pytest.CaptureFixture[str], state: Path) -> None:
    code, _, err = run(capsys, state, "models", "show", "nope")
    assert code == 1 and err.strip() == "modeldeck: error: model 'nope' has no registered versions"


def test_relative_dataset_paths_resolve_against_the_spec_file(
    capsys: pytest.CaptureFixture[str], state: Path, tmp_path: Path
) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    (tmp_path / "data").mkdir()
    pd.DataFrame({"x": x, "y": np.where(x > 0, "up", "down")}).to_csv(tmp_path / "data" / "toy.csv", index=False)
    spec = tmp_path / "toy.toml"
    spec.write_text(
        'name = "toy"\n[dataset]\nsource = "data/toy.csv"\ntarget = "y"\n'
        '[estimator]\nclass = "sklearn.linear_model.LogisticRegression"\n'
        '[[features]]\nname = "x"\ntype = "numeric"\n'
    )
    code, out, err = run(capsys, state, "--json", "train", str(spec))
    assert code == 0, err
    card = json.loads(out)["card"]
    # The training state machine read the CSV next to the spec; the card keeps the path as written
    assert card["version"] == 1 and card["dataset"]["source"] == "data/toy.csv"
    assert str(tmp_path) not in json.dumps(card)


def test_drift_check_publish_runs_the_deployed_drift_job_once_per_window(
    capsys: pytest.CaptureFixture[str], state: Path
) -> None:
    args = ["--json", "drift", "check", "breast-cancer", "--window", "1h", "--end", "2026-11-23T08:00:00Z", "--publish"]
    code, out, _ = run(capsys, state, *args)
    first = json.loads(out)
    # (no traffic in that window: published, but no verdict, which is exit status 4)
    assert code == 4 and first["published"]["namespace"] == "modeldeck" and first["replayed"] is False
    code, out, _ = run(capsys, state, *args)
    assert code == 4 and json.loads(out)["replayed"] is True
