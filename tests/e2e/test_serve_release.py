"""`modeldeck serve` running: other commands act on its cloud, and traffic follows a release's weights.

Given ``modeldeck serve`` in a subprocess, when ``train`` and ``release`` run as separate commands on the
same state directory, then they act on the served cloud (no state of their own), and the HTTP traffic
observed during a linear release follows the alias weights at each step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from modeldeck import release
from modeldeck.cli import main
from modeldeck.localcloud import endpoint_client_factory, running_endpoint
from tests.conftest import DEMO_SPEC, ROOT
from tests.fixtures.inference import ROW

pytestmark = pytest.mark.e2e
API_KEY = "e2e-serve-key"  # every method requires the API key, as on AWS; `serve` takes it from MODELDECK_API_KEY
API_KEY = "e2e-serve-key"  # every method requires the API key, as on AWS


@pytest.fixture
def served(tmp_path: Path) -> Any:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "modeldeck", "--state-dir", str(state), "serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "MODELDECK_API_KEY": API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = None
    deadline = time.monotonic() + 90
    assert process.stdout is not None
    while time.monotonic() < deadline and url is None:
        line = process.stdout.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        url = match.group(1) if match else None
    assert url, "modeldeck serve did not start"
    while running_endpoint(state) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    yield state, url
    process.terminate()
    process.wait(timeout=30)


def predict(url: str) -> str:
    request = urllib.request.Request(
        f"{url}/v1/models/breast-cancer:predict",
        method="POST",
        data=json.dumps({"instances": [ROW]}).encode(),
        headers={"content-type": "application/json", "x-api-key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return str(json.loads(response.read())["model_version"])


def test_traffic_follows_the_weights_of_a_linear_release(
    served: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = served
    assert main(["--state-dir", str(state), "train", str(DEMO_SPEC)]) == 0
    variant = tmp_path / "v2.toml"
    variant.write_text(DEMO_SPEC.read_text().replace("C = 1.0", "C = 0.3"))
    assert main(["--state-dir", str(state), "train", str(variant)]) == 0
    assert main(["--state-dir", str(state), "release", "breast-cancer", "1"]) == 0
    assert predict(url) == "1"
    capsys.readouterr()

    assert (
        main(
            [
                "--state-dir",
                str(state),
                "release",
                "breast-cancer",
                "2",
                "--strategy",
                "linear",
                "--steps",
                "2",
                "--bake",
                "4m",  # the shortest bake CloudWatch can judge with 60 s periods; virtual time in the served cloud
                "--no-wait",
            ]
        )
        == 0
    )
    lam = endpoint_client_factory(running_endpoint(state)["url"])("lambda")  # type: ignore[index]
    function = "modeldeck-dev-breast-cancer"
    observed: dict[float, Counter[str]] = defaultdict(Counter)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        weights = release.alias_weights(release.get_alias(lam, function))
        versions = release.function_versions(lam, function)
        share_v2 = sum(w for v, w in weights.items() if versions[v] == "2")
        observed[round(share_v2, 2)][predict(url)] += 1
        if share_v2 == 1.0 and sum(observed[1.0].values()) >= 20:
            break
    # Both linear steps (1/3, 2/3) were observed, then all traffic on v2.
    assert {0.33, 0.67, 1.0} <= set(observed), observed
    for share in (0.33, 0.67):
        counts = observed[share]
        n = sum(counts.values())
        seen = counts["2"] / n
        sigma = (share * (1 - share) / n) ** 0.5
        assert abs(seen - share) <= 5 * sigma + 0.02, (share, counts)
    assert observed[1.0]["1"] == 0
    capsys.readouterr()
    assert main(["--state-dir", str(state), "--json", "status", "breast-cancer"]) == 0
    status = json.loads(capsys.readouterr().out)[0]
    assert status["champion"] == 2 and status["last_release"]["outcome"] == "promoted"
