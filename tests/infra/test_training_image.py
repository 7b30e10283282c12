"""The training image, which no test here can build (no Docker): what it is made of, and its entry point.

AWS's scikit-learn image runs Python 3.9, too old for our pins, so SageMaker and the training Lambda share our
own Python 3.12 image. SageMaker runs a training image as ``docker run IMAGE train`` (SageMaker developer guide,
"How Amazon SageMaker runs your training image"); Lambda runs it with the handler from ImageConfig.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from infra.bundling import REPO_ROOT
from infra.constructs.training import DOCKERFILE, ENTRYPOINT
from tests.infra.conftest import Synth

LINES = (REPO_ROOT / DOCKERFILE).read_text().splitlines()


def test_the_image_is_lambdas_python_3_12_base_with_our_pinned_training_requirements() -> None:
    (base,) = [line.split()[1] for line in LINES if line.startswith("FROM ")]
    assert base == "public.ecr.aws/lambda/python:3.12"
    assert any("pip install" in line and "requirements-training.txt" in line for line in LINES)
    pins = (REPO_ROOT / "training/requirements.txt").read_text()
    assert re.search(r"^scikit-learn==", pins, re.M) and re.search(r"^numpy==", pins, re.M)


def test_everything_the_dockerfile_copies_is_in_the_staged_build_context(synth: Synth) -> None:
    # Given the image assets that synth staged (what `cdk deploy` hands to Docker), each with its Dockerfile
    staged = [
        (synth.outdir / asset["source"]["directory"], asset["source"].get("dockerFile", "Dockerfile"))
        for manifest_file in synth.outdir.glob("*.assets.json")
        for asset in json.loads(manifest_file.read_text()).get("dockerImages", {}).values()
    ]
    assert DOCKERFILE in {dockerfile for _, dockerfile in staged}, "the training image was not staged"
    # Then each COPY source of its Dockerfile exists in its staged context (a missing one fails the build on deploy)
    for context, dockerfile in staged:
        lines = (REPO_ROOT / dockerfile).read_text().splitlines()
        for source in [line.split()[1] for line in lines if line.startswith("COPY ")]:
            assert (context / source).exists(), (context, source)


def test_the_entrypoint_sends_train_to_the_sagemaker_runner_and_anything_else_to_lambda(tmp_path: Path) -> None:
    script = REPO_ROOT / ENTRYPOINT
    assert os.access(script, os.X_OK), "COPY keeps the mode: a non-executable entry point cannot start"
    # Given a task root whose `training.sagemaker` only says it ran
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "sagemaker.py").write_text("print('sagemaker runner')\n")
    env = {**os.environ, "LAMBDA_TASK_ROOT": str(tmp_path)}
    # When SageMaker runs the image with `train`
    done = subprocess.run(["sh", str(script), "train"], env=env, capture_output=True, text=True, timeout=30)
    # Then our runner runs from the task root
    assert done.returncode == 0 and done.stdout.strip() == "sagemaker runner", done
    # and anything else goes on to Lambda's own entry point (absent here, so the shell says which it tried)
    done = subprocess.run(["sh", str(script), "handler.x"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "/lambda-entrypoint.sh" in done.stderr
