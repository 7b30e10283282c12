"""Least privilege, read from every IAM policy of the synthesized templates (one session synth).

- A wildcard (``*`` in a resource) is allowed only for actions that have no resource-level permissions, or
  when the stack carries a cdk-nag acknowledgment with a reason for exactly that resource pattern.
- No action wildcard (``s3:*``, ``*``) anywhere.
- The inference role reads its own model's prefix and writes nothing in S3 (capture goes through logs).
- Every bucket is encrypted and denies non-TLS access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.infra.conftest import Synth
from tests.infra.test_stacks import RESOURCELESS, _arn_text, _as_list

FIGURES = Path(__file__).resolve().parents[2] / "build" / "hardening"


def _documents(synth: Synth) -> list[tuple[str, str, dict[str, Any]]]:
    """(stack, resource key, policy document) for every identity policy: Policy, ManagedPolicy, Role inline."""
    out = []
    for stack, template in synth.templates.items():
        for logical, res in template.get("Resources", {}).items():
            props = res.get("Properties", {})
            if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                out.append((stack, logical, props["PolicyDocument"]))
            elif res["Type"] == "AWS::IAM::Role":
                out.extend(
                    (stack, f"{logical}/{p['PolicyName']}", p["PolicyDocument"]) for p in props.get("Policies", [])
                )
    return out


def _acknowledged(synth: Synth) -> dict[str, dict[str, str]]:
    """Stack → {finding id: reason} of every cdk-nag acknowledgment in the assembly's metadata."""
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    found: dict[str, dict[str, str]] = {}
    for name, artifact in manifest["artifacts"].items():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        metadata = artifact.get("metadata") or {}
        meta_file = synth.outdir / f"{name}.metadata.json"
        if meta_file.exists():
            metadata = {**metadata, **json.loads(meta_file.read_text())}
        for entries in metadata.values():
            for entry in entries:
                if entry.get("type") == "aws:cdk:acknowledged-rules":
                    for rule, reason in entry["data"].items():
                        found.setdefault(name, {})[rule.removeprefix("Annotation::")] = reason
    return found


def _literal_tail(resource: Any) -> str:
    """The literal part of an ARN after its last token, e.g. ``/models/breast-cancer/*`` or ``:*``."""
    text = _arn_text(resource)
    return text.rsplit(">", 1)[-1]


def test_every_wildcard_is_resourceless_or_acknowledged_with_a_reason(synth: Synth) -> None:
    acks = _acknowledged(synth)
    documents = _documents(synth)
    statements = wildcards = acknowledged = 0
    unexplained = []
    for stack, key, document in documents:
        for statement in _as_list(document["Statement"]):
            statements += 1
            actions = _as_list(statement.get("Action", []))
            assert not any(a == "*" or a.endswith(":*") for a in actions), f"{stack}/{key}: {actions}"
            for resource in _as_list(statement.get("Resource", [])):
                if "*" not in _arn_text(resource):
                    continue
                wildcards += 1
                if resource == "*" and set(actions) <= RESOURCELESS:
                    continue
                tail = _literal_tail(resource)
                reasons = [
                    r
                    for rule, r in acks.get(stack, {}).items()
                    if rule.startswith("AwsSolutions-IAM5")
                    and (tail in rule or (resource == "*" and any(a in rule for a in actions)))
                ]
                if reasons and all(len(r) > 20 for r in reasons):
                    acknowledged += 1
                else:
                    unexplained.append(f"{stack}/{key}: {actions} on {_arn_text(resource)}")
    assert not unexplained, "\n".join(unexplained)
    assert statements > 0
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "iam.json").write_text(
        json.dumps(
            {
                "policies": len(documents),
                "statements": statements,
                "wildcard_resources": wildcards,
                "wildcards_acknowledged": acknowledged,
                "acknowledgments": sum(len(a) for a in acks.values()),
            },
            indent=2,
        )
        + "\n"
    )


def test_the_inference_role_writes_nothing_in_s3_and_reads_only_its_model(synth: Synth) -> None:
    functions = {
        k: f
        for k, f in synth.resources("AWS::Lambda::Function").items()
        if f["Properties"].get("Handler") == "lambdas.inference.handler.lambda_handler"
    }
    assert functions
    for key, fn in functions.items():
        stack = key.split("/")[0]
        role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
        model = fn["Properties"]["Environment"]["Variables"]["MODEL_NAME"]
        policies = [
            p for p in synth.resources("AWS::IAM::Policy", stack).values() if {"Ref": role} in p["Properties"]["Roles"]
        ]
        for policy in policies:
            for statement in _as_list(policy["Properties"]["PolicyDocument"]["Statement"]):
                s3 = [a for a in _as_list(statement["Action"]) if a.startswith("s3:")]
                assert all(a.startswith(("s3:Get", "s3:List")) for a in s3), (key, s3)
                if s3 == ["s3:ListBucket"]:
                    # Listing (so a missing key is a 404, not a 403) only under its own model's prefix
                    prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
                    assert _as_list(prefixes) == [f"models/{model}/*"], (key, prefixes)
                elif s3:
                    assert all(_arn_text(r).endswith(f"/models/{model}/*") for r in _as_list(statement["Resource"]))


def test_every_bucket_is_encrypted_and_tls_only(synth: Synth) -> None:
    buckets = synth.resources("AWS::S3::Bucket")
    policies = synth.resources("AWS::S3::BucketPolicy")
    assert buckets
    for key, bucket in buckets.items():
        assert bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"], key
        logical = key.split("/")[1]
        denies = [
            s
            for p in policies.values()
            if p["Properties"]["Bucket"] == {"Ref": logical}
            for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denies, f"{key} accepts plain HTTP"
