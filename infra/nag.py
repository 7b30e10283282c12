"""cdk-nag acknowledgments: every one names the exact finding and says why it is acceptable.

cdk-nag 3 reports through CDK's validation API; a finding is suppressed with
``Validations.of(scope).acknowledge(Acknowledgment(id=..., reason=...))`` on the construct (or a parent).
IAM5 finding ids embed the resolved resource (``Resource::<LogicalId.Arn>/models/x/*``), so
:func:`acknowledge_prefix` computes the id from the bucket token instead of hard-coding a logical id.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (``AwsSolutions-XXX`` or ``AwsSolutions-XXX[detail]``) on ``scope``."""
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def _render(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag renders it in finding ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if key == "Ref":
            return f"<{arg}>"
        if key == "Fn::ImportValue":
            return f"<{_render(arg)}>" if not isinstance(arg, str) else arg
        if key == "Fn::Join":
            sep, parts = arg
            return sep.join(_render(p) for p in parts)
    return str(value)


def acknowledge_prefix(scope: IConstruct, bucket: s3.IBucket, prefix: str, reason: str) -> None:
    """Acknowledge the IAM5 wildcard finding for objects under ``prefix`` of ``bucket``."""
    resolved = cdk.Stack.of(scope).resolve(bucket.arn_for_objects(prefix))
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{_render(resolved)}]", reason)


def acknowledge_resource(scope: IConstruct, arn: str, suffix: str, reason: str) -> None:
    """Acknowledge the IAM5 finding for ``arn`` + ``suffix`` (e.g. a function's versions, ``:*``)."""
    resolved = cdk.Stack.of(scope).resolve(arn)
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{_render(resolved)}{suffix}]", reason)


def acknowledge_map_children(state_machine: Any, reason: str) -> None:
    """Acknowledge the IAM5 findings of CDK's Distributed Map grant: its role starts, describes and stops the
    map's child executions (``execution:{machine name}:*`` and ``execution:{machine name}/*:*``)."""
    import json

    stack = cdk.Stack.of(state_machine)
    name = cdk.Fn.select(6, cdk.Fn.split(":", state_machine.state_machine_arn))
    machine = json.dumps(stack.resolve(name), separators=(",", ":"))
    executions = _render(stack.resolve(f"arn:{cdk.Aws.PARTITION}:states:{stack.region}:{stack.account}:execution:"))
    for suffix in (":*", "/*:*"):
        acknowledge(state_machine, f"AwsSolutions-IAM5[Resource::{executions}{machine}{suffix}]", reason)
