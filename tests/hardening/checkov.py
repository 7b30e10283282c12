"""checkov on the synthesized templates, as a second opinion to cdk-nag (``make harden``).

Synthesizes the app once (stub bundles) into build/harden-cdk.out, runs checkov from its own venv
(build/checkov-venv: checkov pins boto3 1.35, which conflicts with the project's boto3 1.44), and fails on
any finding that is not in :data:`ACCEPTED` with its reason (docs/reliability.md repeats the table).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "harden-cdk.out"
CHECKOV = ROOT / "build" / "checkov-venv" / "bin" / "checkov"

ACCEPTED = {
    "CKV_AWS_158": "Log groups use CloudWatch Logs' default encryption at rest; they hold no API keys or "
    "payloads (tests/hardening/test_log_secrecy.py), so a customer key adds cost, not protection.",
    "CKV_AWS_116": "No function is invoked asynchronously: inference is synchronous behind API Gateway, "
    "training and release are Step Functions tasks with retries and a catch to SNS, the drift "
    "job is retried by its schedule and idempotent per window, the capture processor is a "
    "synchronous Firehose transform. A DLQ would never receive anything.",
    "CKV_AWS_117": "The functions reach only AWS APIs (S3, CloudWatch, SNS); there is no private resource to "
    "reach, and a VPC would add NAT or endpoints and cold-start time for nothing.",
    "CKV_AWS_115": "Inference is bounded by the API's usage plan (rate, burst, quota per key); reserving "
    "concurrency per function would cap the account's pool per model without a capacity plan.",
    "CKV_AWS_173": "Environment variables hold no secrets (model name, version, bucket, thresholds); Lambda "
    "encrypts them at rest with an AWS-managed key.",
    "CKV_AWS_120": "Inference answers POST requests whose answers must not be cached.",
    "CKV_AWS_18": "The access-log bucket is the target of the registry's access logs; logging it would recurse.",
}


def synthesize() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.infra.conftest import synthesize as synth

    shutil.rmtree(OUT, ignore_errors=True)
    synth(OUT)


def main() -> int:
    synthesize()
    templates = sorted(OUT.glob("*.template.json"))
    files = [arg for t in templates for arg in ("-f", str(t))]
    result = subprocess.run(
        [str(CHECKOV), "--framework", "cloudformation", "--quiet", "--compact", "-o", "json", *files],
        capture_output=True,
        text=True,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    by_check = Counter(c["check_id"] for c in failed)
    unexplained = sorted(set(by_check) - set(ACCEPTED))
    summary = {
        "templates": len(templates),
        "passed": passed,
        "failed": len(failed),
        "failed_by_check": dict(sorted(by_check.items())),
        "unexplained": unexplained,
    }
    (ROOT / "build" / "hardening").mkdir(parents=True, exist_ok=True)
    (ROOT / "build" / "hardening" / "checkov.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"checkov: {passed} passed, {len(failed)} failed ({len(by_check)} checks), all accepted with a reason"
        if not unexplained
        else f"checkov: findings without a disposition: {', '.join(unexplained)}"
    )
    for check in unexplained:
        for c in failed:
            if c["check_id"] == check:
                print(f"  {check} {c['check_name']} {c['file_path']} {c['resource']}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
