"""Ask a real IAM policy evaluator whether a principal may act on our resources, from the synthesized templates.

Reading a policy is not evaluating it: a statement can look right and still not apply (a topic policy that
replaces SNS's default, a condition key the caller never sends, an ARN that does not match). This helper
resolves the synthesized templates for a concrete account and region and hands the policies to
``@cloud-copilot/iam-simulate`` (npm devDependency, run by ``tests/infra/iam_sim.js``), which evaluates
identity and resource policies, conditions included, the way AWS documents it.

Typical use, on a session-scoped synthesis made with ``account=ACCOUNT, region=REGION``::

    sim = Templates(synth.templates)
    topic = sim.arn_of("AWS::SNS::Topic", TopicName="modeldeck-dev-alerts")
    decide([
        Request(
            principal="cloudwatch.amazonaws.com",
            action="sns:Publish",
            resource=topic,
            resource_policy=sim.topic_policy(topic),
            context={"aws:SourceAccount": ACCOUNT, "aws:SourceArn": alarm_arn, "aws:SecureTransport": "true"},
        )
    ])  # -> ["Allowed"]

``decide`` runs one node process per batch (about 0.3 s), so ask many questions at once. Results are
``"Allowed"``, ``"ExplicitlyDenied"`` or ``"ImplicitlyDenied"``; an invalid request (an unknown action, a
malformed policy) raises :class:`SimulationError` with the evaluator's explanation.

Resolution covers what CDK emits: ``Ref`` and ``Fn::GetAtt`` of the resource types below (physical names are
the template's name properties, else the logical id), ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``,
``Fn::Split``, ``Fn::ImportValue`` (from the other templates' exports) and the pseudo parameters.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PARTITION = "aws"
OTHER_ACCOUNT = "210987654321"
SCRIPT = Path(__file__).with_name("iam_sim.js")
ROOT = Path(__file__).resolve().parents[2]

# Resource type -> the property holding its physical name (absent: the logical id stands in for it).
NAME_PROPERTY = {
    "AWS::SNS::Topic": "TopicName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Events::Rule": "Name",
    "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::ApiGateway::Stage": "StageName",
}
# Resource type -> ARN format ({p} partition, {r} region, {a} account, {n} physical name).
ARN_FORMAT = {
    "AWS::SNS::Topic": "arn:{p}:sns:{r}:{a}:{n}",
    "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{n}",
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{n}",
    "AWS::S3::Bucket": "arn:{p}:s3:::{n}",
    "AWS::StepFunctions::StateMachine": "arn:{p}:states:{r}:{a}:stateMachine:{n}",
    "AWS::Events::Rule": "arn:{p}:events:{r}:{a}:rule/{n}",
    "AWS::KinesisFirehose::DeliveryStream": "arn:{p}:firehose:{r}:{a}:deliverystream/{n}",
    "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{n}:*",
    "AWS::CloudWatch::Alarm": "arn:{p}:cloudwatch:{r}:{a}:alarm:{n}",
    "AWS::SQS::Queue": "arn:{p}:sqs:{r}:{a}:{n}",
    "AWS::KMS::Key": "arn:{p}:kms:{r}:{a}:key/{n}",
    "AWS::IAM::ManagedPolicy": "arn:{p}:iam::{a}:policy/{n}",
}
# Types whose Ref is their ARN rather than their name.
REF_IS_ARN = {"AWS::SNS::Topic", "AWS::StepFunctions::StateMachine", "AWS::IAM::ManagedPolicy"}


class SimulationError(RuntimeError):
    """The evaluator refused the request itself (unknown action, malformed policy, wrong resource type)."""


@dataclass(frozen=True)
class Request:
    """One question: may ``principal`` do ``action`` on ``resource``, given these policies and context keys?

    ``principal`` is an ARN (a role: ``arn:aws:iam::123456789012:role/name``) or a service principal
    (``cloudwatch.amazonaws.com``). ``context`` holds the request's condition keys (``aws:SourceArn``,
    ``aws:SecureTransport``, ``s3:prefix``...). ``identity_policies`` are the principal's policy documents,
    ``resource_policy`` the resource's (topic, key, bucket, function, or a role's trust policy for
    ``sts:AssumeRole``).
    """

    principal: str
    action: str
    resource: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    resource_policy: Mapping[str, Any] | None = None
    identity_policies: Sequence[Mapping[str, Any]] = ()
    resource_account: str = ACCOUNT

    def simulation(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request": {
                "principal": self.principal,
                "action": self.action,
                "resource": {"resource": self.resource, "accountId": self.resource_account},
                "contextVariables": {k: v if isinstance(v, str) else list(v) for k, v in self.context.items()},
            },
            "identityPolicies": [{"name": f"p{i}", "policy": p} for i, p in enumerate(self.identity_policies)],
            "serviceControlPolicies": [],
            "resourceControlPolicies": [],
        }
        if self.resource_policy is not None:
            out["resourcePolicy"] = self.resource_policy
        return out


def decide(requests: Sequence[Request]) -> list[str]:
    """The evaluator's answer to each request, in order (one node process for the batch)."""
    if not requests:
        return []
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
        raise RuntimeError("the IAM evaluator needs node and `npm ci` (package.json devDependencies)")
    payload = json.dumps([r.simulation() for r in requests])
    done = subprocess.run(
        [node, str(SCRIPT)], input=payload, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"iam_sim.js failed: {done.stderr[-2000:]}")
    answers = json.loads(done.stdout)
    out = []
    for request, answer in zip(requests, answers, strict=True):
        if "error" in answer:
            raise SimulationError(f"{request.action} on {request.resource}: {answer['error']}")
        out.append(answer["result"])
    return out


def document(statements: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A policy document holding ``statements``."""
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Templates:
    """The synthesized templates (``{stack id: template}``) resolved for one account and region."""

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, Any]],
        *,
        account: str = ACCOUNT,
        region: str = REGION,
        partition: str = PARTITION,
    ) -> None:
        self.templates = templates
        self.account, self.region, self.partition = account, region, partition
        self._exports: dict[str, tuple[str, Any]] | None = None

    # -- resolution ---------------------------------------------------------------------------------------

    def resolve(self, stack: str, value: Any) -> Any:
        """``value`` (from ``stack``'s template) with every intrinsic function replaced by its value."""
        if isinstance(value, list):
            return [self.resolve(stack, v) for v in value if v != {"Ref": "AWS::NoValue"}]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((fn, arg),) = value.items()
            if fn == "Ref":
                return self._ref(stack, arg)
            if fn == "Fn::GetAtt":
                logical, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self._get_att(stack, logical, attr)
            if fn == "Fn::Join":
                sep, parts = arg
                return str(sep).join(str(p) for p in self.resolve(stack, parts))
            if fn == "Fn::Select":
                index, items = arg
                return self.resolve(stack, items)[int(self.resolve(stack, index))]
            if fn == "Fn::Split":
                sep, text = arg
                return str(self.resolve(stack, text)).split(sep)
            if fn == "Fn::Sub":
                return self._sub(stack, arg)
            if fn == "Fn::ImportValue":
                return self._import(self.resolve(stack, arg))
            if fn.startswith("Fn::"):
                raise NotImplementedError(f"{stack}: cannot resolve {fn}")
        return {k: self.resolve(stack, v) for k, v in value.items()}

    def _pseudo(self, name: str, stack: str) -> str | None:
        return {
            "AWS::Partition": self.partition,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack,
        }.get(name)

    def _resource(self, stack: str, logical: str) -> Mapping[str, Any]:
        try:
            return self.templates[stack]["Resources"][logical]
        except KeyError:
            raise KeyError(f"{stack} has no resource {logical}") from None

    def physical_name(self, stack: str, logical: str) -> str:
        """The resource's name: its name property when the template sets one, else its logical id."""
        res = self._resource(stack, logical)
        prop = NAME_PROPERTY.get(res["Type"])
        name = (res.get("Properties") or {}).get(prop) if prop else None
        return str(self.resolve(stack, name)) if name is not None else logical

    def _arn(self, stack: str, logical: str) -> str:
        res = self._resource(stack, logical)
        kind = res["Type"]
        props = res.get("Properties") or {}
        if kind == "AWS::Lambda::Alias":
            return f"{self._function_arn(stack, props['FunctionName'])}:{self.resolve(stack, props['Name'])}"
        if kind == "AWS::Lambda::Version":
            return f"{self._function_arn(stack, props['FunctionName'])}:1"
        if kind not in ARN_FORMAT:
            raise NotImplementedError(f"{stack}/{logical}: no ARN format for {kind}")
        return ARN_FORMAT[kind].format(
            p=self.partition, r=self.region, a=self.account, n=self.physical_name(stack, logical)
        )

    def _function_arn(self, stack: str, name: Any) -> str:
        text = str(self.resolve(stack, name))
        if text.startswith("arn:"):
            return text
        return ARN_FORMAT["AWS::Lambda::Function"].format(p=self.partition, r=self.region, a=self.account, n=text)

    def _ref(self, stack: str, name: str) -> Any:
        pseudo = self._pseudo(name, stack)
        if pseudo is not None:
            return pseudo
        if name in (self.templates[stack].get("Parameters") or {}):
            return (self.templates[stack]["Parameters"][name]).get("Default", name)
        kind = self._resource(stack, name)["Type"]
        if kind in REF_IS_ARN or kind in ("AWS::Lambda::Alias", "AWS::Lambda::Version"):
            return self._arn(stack, name)
        return self.physical_name(stack, name)

    def _get_att(self, stack: str, logical: str, attr: str) -> Any:
        kind = self._resource(stack, logical)["Type"]
        if attr in ("Arn", "TopicArn", "StateMachineArn") or (attr == "Arn" and kind in ARN_FORMAT):
            return self._arn(stack, logical)
        if attr in ("TopicName", "Name", "StateMachineName", "KeyId"):
            return self.physical_name(stack, logical)
        if attr == "RootResourceId":
            return f"{logical}-root"
        if attr == "Version":
            return "1"
        raise NotImplementedError(f"{stack}/{logical}: cannot resolve attribute {attr} of {kind}")

    def _sub(self, stack: str, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(self.resolve(stack, variables[name]))
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return str(self._get_att(stack, logical, attr))
            return str(self._ref(stack, name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def _import(self, name: str) -> Any:
        if self._exports is None:
            self._exports = {}
            for stack, template in self.templates.items():
                for output in (template.get("Outputs") or {}).values():
                    export = output.get("Export")
                    if export:
                        self._exports[str(self.resolve(stack, export["Name"]))] = (stack, output["Value"])
        stack, value = self._exports[name]
        return self.resolve(stack, value)

    # -- finding resources and their policies ---------------------------------------------------------------

    def find(self, kind: str, **properties: Any) -> list[tuple[str, str]]:
        """(stack, logical id) of every resource of ``kind`` whose resolved properties equal ``properties``."""
        out = []
        for stack, template in self.templates.items():
            for logical, res in (template.get("Resources") or {}).items():
                if res["Type"] != kind:
                    continue
                props = res.get("Properties") or {}
                if all(k in props and self.resolve(stack, props[k]) == v for k, v in properties.items()):
                    out.append((stack, logical))
        return out

    def arn_of(self, kind: str, **properties: Any) -> str:
        """The ARN of the one resource of ``kind`` with these properties."""
        found = self.find(kind, **properties)
        if len(found) != 1:
            raise LookupError(f"expected one {kind} with {properties}, found {found}")
        return self._arn(*found[0])

    def _policies_for(self, kind: str, target_prop: str, target: str) -> list[dict[str, Any]]:
        statements: list[dict[str, Any]] = []
        for stack, logical in self.find(kind):
            props = self._resource(stack, logical)["Properties"]
            if target in [self.resolve(stack, t) for t in _as_list(props[target_prop])]:
                statements += _as_list(self.resolve(stack, props["PolicyDocument"])["Statement"])
        return statements

    def topic_policy(self, topic_arn: str) -> dict[str, Any] | None:
        """The topic's resource policy (its ``AWS::SNS::TopicPolicy`` statements), None when it has none:
        then SNS's default policy applies, which this helper does not model."""
        statements = self._policies_for("AWS::SNS::TopicPolicy", "Topics", topic_arn)
        return document(statements) if statements else None

    def bucket_policy(self, bucket_name: str) -> dict[str, Any] | None:
        """The bucket's resource policy (``AWS::S3::BucketPolicy``), None when it has none."""
        statements = self._policies_for("AWS::S3::BucketPolicy", "Bucket", bucket_name)
        return document(statements) if statements else None

    def key_policy(self, key_arn: str) -> dict[str, Any]:
        """The KMS key's key policy."""
        for stack, logical in self.find("AWS::KMS::Key"):
            if self._arn(stack, logical) == key_arn:
                return self.resolve(stack, self._resource(stack, logical)["Properties"]["KeyPolicy"])
        raise LookupError(f"no key {key_arn}")

    def key_of_topic(self, topic_arn: str) -> str:
        """The ARN of the KMS key a topic is encrypted with."""
        for stack, logical in self.find("AWS::SNS::Topic"):
            if self._arn(stack, logical) == topic_arn:
                key = self.resolve(stack, self._resource(stack, logical)["Properties"]["KmsMasterKeyId"])
                return (
                    key
                    if key.startswith("arn:")
                    else ARN_FORMAT["AWS::KMS::Key"].format(p=self.partition, r=self.region, a=self.account, n=key)
                )
        raise LookupError(f"no topic {topic_arn}")

    def lambda_policy(self, function_arn: str) -> dict[str, Any]:
        """The function's resource policy as Lambda builds it from its ``AWS::Lambda::Permission`` resources.

        ``function_arn`` may be qualified (an alias or version): a permission on ``fn:live`` covers only
        invocations of ``fn:live``, as on AWS.
        """
        statements = []
        for stack, logical in self.find("AWS::Lambda::Permission"):
            props = self.resolve(stack, self._resource(stack, logical)["Properties"])
            target = self._function_arn(stack, props["FunctionName"])
            if target != function_arn:
                continue
            principal = str(props["Principal"])
            who = {"Service": principal} if principal.endswith(".amazonaws.com") else {"AWS": principal}
            condition: dict[str, Any] = {}
            if "SourceArn" in props:
                condition["ArnLike"] = {"AWS:SourceArn": props["SourceArn"]}
            if "SourceAccount" in props:
                condition["StringEquals"] = {"AWS:SourceAccount": props["SourceAccount"]}
            statement: dict[str, Any] = {
                "Sid": logical,
                "Effect": "Allow",
                "Principal": who,
                "Action": props["Action"],
                "Resource": target,
            }
            if condition:
                statement["Condition"] = condition
            statements.append(statement)
        return document(statements)

    def role_arn(self, role_name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{role_name}"

    def role_policies(self, role_arn: str) -> list[dict[str, Any]]:
        """The role's identity policies: inline ones, ``AWS::IAM::Policy`` and our managed policies attached
        to it. (AWS-managed policies are not modelled; none of ours rely on them for the checks here.)"""
        docs: list[dict[str, Any]] = []
        for stack, logical in self.find("AWS::IAM::Role"):
            if self._arn(stack, logical) == role_arn:
                props = self._resource(stack, logical)["Properties"]
                docs += [self.resolve(stack, p["PolicyDocument"]) for p in props.get("Policies", [])]
        name = role_arn.rsplit("/", 1)[-1]
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for stack, logical in self.find(kind):
                props = self._resource(stack, logical)["Properties"]
                roles = [str(self.resolve(stack, r)) for r in props.get("Roles", [])]
                if name in roles or role_arn in roles:
                    docs.append(self.resolve(stack, props["PolicyDocument"]))
        return docs

    def trust_policy(self, role_arn: str) -> dict[str, Any]:
        """The role's trust policy (the resource policy ``sts:AssumeRole`` is evaluated against)."""
        for stack, logical in self.find("AWS::IAM::Role"):
            if self._arn(stack, logical) == role_arn:
                return self.resolve(stack, self._resource(stack, logical)["Properties"]["AssumeRolePolicyDocument"])
        raise LookupError(f"no role {role_arn}")
