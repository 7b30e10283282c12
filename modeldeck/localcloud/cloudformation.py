"""CloudFormation: the synthesized templates deployed into the local cloud, resource by resource."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck.localcloud.cloudwatch import ALARM_ARGUMENTS

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_SYNTH_INPUTS = ("app.py", "cdk.json", "infra", "models", "lambdas")


def assembly_templates(
    cdk_out: Path, progress: Callable[[str], None] = lambda msg: None
) -> list[dict[str, Any]] | None:
    """The app's templates, synthesizing the cloud assembly first when it is missing or older than its
    sources. None when there is no CDK app to synthesize. Concurrent callers synthesize once."""
    import fcntl
    import subprocess

    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return None
    cdk_out = cdk_out.resolve()
    cdk_out.parent.mkdir(parents=True, exist_ok=True)
    with open(cdk_out.parent / f".{cdk_out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = cdk_out / "manifest.json"
        if not manifest.is_file() or manifest.stat().st_mtime < _newest_source():
            progress(f"synthesizing the CDK app into {cdk_out} (once; about 10 s)...")
            # The local cloud runs handlers from the repository, so the Lambda bundles' pip layer is skipped.
            env = {
                **os.environ,
                "CDK_OUTDIR": str(cdk_out),
                "MODELDECK_BUNDLING": "stub",
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            }
            done = subprocess.run([sys.executable, str(app)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"CDK synth failed:\n{done.stderr[-2000:]}")
        return load_templates(cdk_out)


def _newest_source() -> float:
    paths = (p for name in _SYNTH_INPUTS for p in [REPO_ROOT / name, *(REPO_ROOT / name).rglob("*")])
    return max((p.stat().st_mtime for p in paths if p.is_file() and "__pycache__" not in p.parts), default=0.0)


def load_templates(cdk_out: Path) -> list[dict[str, Any]]:
    """The app's stack templates from a cloud assembly, dependencies first."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    stacks = {name: art for name, art in manifest["artifacts"].items() if art["type"] == "aws:cloudformation:stack"}
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dep in stacks[name].get("dependencies", []):
            if dep in stacks:
                visit(dep)
        ordered.append(name)

    for name in sorted(stacks):
        visit(name)
    return [json.loads((cdk_out / stacks[n]["properties"]["templateFile"]).read_text()) for n in ordered]


class TemplateDeployer:
    """Deploys synthesized CloudFormation templates into the local cloud, resource by resource.

    moto's own CloudFormation cannot take a CDK template (no Lambda aliases, alarms or bucket policies;
    state machines it creates are invisible to the executing backend), so this walks the template itself:
    it resolves the intrinsic functions CDK emits and creates each resource through the ordinary API.
    Resource types with no local behaviour (IAM, log groups, dashboards, API Gateway — emulated by the
    gateway) are recorded but not created.
    """

    def __init__(self, cloud: LocalCloud, account_id: str = "123456789012") -> None:
        self.cloud = cloud
        self.account_id = account_id
        self.physical: dict[str, Any] = {}
        self.arns: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.exports: dict[str, Any] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self._role_arn: str | None = None

    # -- intrinsic functions -------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._get_att(logical, attr)
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(p) for p in self.resolve(parts))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::ImportValue":
                return self.exports[self.resolve(arg)]
            if key == "Fn::If":
                raise NotImplementedError("conditions are not used by modeldeck's templates")
        return {k: self.resolve(v) for k, v in value.items()}

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.cloud.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "local",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        return self.physical.get(name, name)

    def _get_att(self, logical: str, attr: str) -> Any:
        if attr == "Arn" and logical in self.arns:
            return self.arns[logical]
        if attr in ("Name", "TopicName") and logical in self.physical:
            return self.physical[logical]
        return self.arns.get(logical, self.physical.get(logical, f"{logical}.{attr}"))

    def _sub(self, arg: Any) -> str:
        import re as _re

        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def repl(match: Any) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical, attr = name.split(".", 1)
                return str(self._get_att(logical, attr))
            return str(self._ref(name))

        return _re.sub(r"\$\{([^}!]+)\}", repl, text)

    # -- resources -----------------------------------------------------------------------------------
    def deploy(self, templates: list[dict[str, Any]]) -> None:
        """Deploy templates in order (dependencies first, as CDK lists stacks)."""
        for template in templates:
            resources = template.get("Resources", {})
            self.resources.update(resources)
            for logical in self._order(resources):
                self._create(logical, resources[logical])
            for name, output in template.get("Outputs", {}).items():
                value = self.resolve(output["Value"])
                self.outputs[name] = value
                if "Export" in output:
                    self.exports[self.resolve(output["Export"]["Name"])] = value

    @staticmethod
    def _order(resources: dict[str, Any]) -> list[str]:
        """Topological order by Ref/GetAtt/DependsOn, so a resource is created after what it names."""

        def deps(node: Any, out: set[str]) -> set[str]:
            if isinstance(node, dict):
                for key, val in node.items():
                    if key == "Ref" and isinstance(val, str) and val in resources:
                        out.add(val)
                    elif key == "Fn::GetAtt":
                        name = val[0] if isinstance(val, list) else str(val).split(".", 1)[0]
                        if name in resources:
                            out.add(name)
                    elif key == "Fn::Sub":
                        import re as _re

                        text = val if isinstance(val, str) else val[0]
                        out.update(
                            n.split(".")[0]
                            for n in _re.findall(r"\$\{([^}!]+)\}", text)
                            if n.split(".")[0] in resources
                        )
                        if not isinstance(val, str):
                            deps(val[1], out)
                    else:
                        deps(val, out)
            elif isinstance(node, list):
                for item in node:
                    deps(item, out)
            return out

        graph = {}
        for name, res in resources.items():
            found = deps(res.get("Properties", {}), set())
            extra = res.get("DependsOn", [])
            found.update([extra] if isinstance(extra, str) else extra)
            graph[name] = {d for d in found if d in resources and d != name}
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered or name in visiting:
                return
            visiting.add(name)
            for dep in sorted(graph[name]):
                visit(dep)
            visiting.discard(name)
            ordered.append(name)

        for name in sorted(graph):
            visit(name)
        return ordered

    def _role(self) -> str:
        if self._role_arn is None:
            iam = self.cloud.client("iam")
            try:
                self._role_arn = iam.get_role(RoleName="modeldeck-local")["Role"]["Arn"]
            except Exception:  # moto raises NoSuchEntity
                doc = json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "sts:AssumeRole",
                                "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                            }
                        ],
                    }
                )
                self._role_arn = iam.create_role(RoleName="modeldeck-local", AssumeRolePolicyDocument=doc)["Role"][
                    "Arn"
                ]
        return self._role_arn

    def _name(self, logical: str, explicit: Any, limit: int = 64, lower: bool = False) -> str:
        name = str(self.resolve(explicit)) if explicit else f"local-{logical}"
        name = name[:limit]
        return name.lower() if lower else name

    def _create(self, logical: str, resource: dict[str, Any]) -> None:
        kind = resource["Type"]
        props = resource.get("Properties", {})
        handler = getattr(self, "_create_" + kind.replace("::", "_").replace("AWS_", "", 1), None)
        if handler is not None:
            handler(logical, props)

    def _create_S3_Bucket(self, logical: str, props: dict[str, Any]) -> None:
        name = self._name(logical, props.get("BucketName"), 63, lower=True).replace("_", "-")
        s3 = self.cloud.client("s3")
        try:
            s3.create_bucket(Bucket=name)
        except Exception as exc:  # an existing bucket (restored state) is fine
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise
        self.physical[logical] = name
        self.arns[logical] = f"arn:aws:s3:::{name}"

    def _create_Lambda_Function(self, logical: str, props: dict[str, Any]) -> None:
        import io
        import zipfile

        name = self._name(logical, props.get("FunctionName"))
        env = {k: str(v) for k, v in (self.resolve(props.get("Environment", {})).get("Variables") or {}).items()}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("README.txt", "Local cloud: the handler runs in-process from the repository.")
        spec: dict[str, Any] = {
            "FunctionName": name,
            "Role": self._role(),
            "Environment": {"Variables": env},
            "MemorySize": int(props.get("MemorySize", 128)),
            "Timeout": int(props.get("Timeout", 3)),
            "Description": logical,
        }
        if props.get("PackageType") == "Image" or "ImageConfig" in props:
            spec.update(
                PackageType="Image",
                Code={"ImageUri": f"{self.account_id}.dkr.ecr.local/{name}:latest"},
                ImageConfig=self.resolve(props.get("ImageConfig", {})),
            )
        else:
            spec.update(
                Runtime=props.get("Runtime", "python3.12"), Handler=props["Handler"], Code={"ZipFile": buf.getvalue()}
            )
        fn = self.cloud.client("lambda").create_function(**spec)
        self.physical[logical] = name
        self.arns[logical] = fn["FunctionArn"]

    def _create_Lambda_Version(self, logical: str, props: dict[str, Any]) -> None:
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        version = self.cloud.client("lambda").publish_version(FunctionName=fn_name)
        self.physical[logical] = version["FunctionArn"]
        self.arns[logical] = version["FunctionArn"]
        self.versions = getattr(self, "versions", {})
        self.versions[logical] = version["Version"]

    def _fn_name(self, ref: str) -> str:
        return ref.split(":")[6] if ref.startswith("arn:") else ref

    def _create_Lambda_Alias(self, logical: str, props: dict[str, Any]) -> None:
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        version = str(self.resolve(props["FunctionVersion"])).rsplit(":", 1)[-1]
        alias = self.cloud.client("lambda").create_alias(
            FunctionName=fn_name, Name=props["Name"], FunctionVersion=version
        )
        self.physical[logical] = alias["AliasArn"]
        self.arns[logical] = alias["AliasArn"]

    def _create_SNS_Topic(self, logical: str, props: dict[str, Any]) -> None:
        arn = self.cloud.client("sns").create_topic(Name=self._name(logical, props.get("TopicName"), 256))["TopicArn"]
        self.physical[logical] = arn
        self.arns[logical] = arn

    def _create_StepFunctions_StateMachine(self, logical: str, props: dict[str, Any]) -> None:
        definition = props.get("DefinitionString")
        text = self.resolve(definition) if not isinstance(definition, str) else definition
        for key, value in (self.resolve(props.get("DefinitionSubstitutions") or {})).items():
            text = text.replace("${" + key + "}", str(value))
        name = self._name(logical, props.get("StateMachineName"), 80)
        arn = self.cloud.client("stepfunctions").create_state_machine(name=name, definition=text, roleArn=self._role())[
            "stateMachineArn"
        ]
        self.physical[logical] = arn
        self.arns[logical] = arn

    def _create_CloudWatch_Alarm(self, logical: str, props: dict[str, Any]) -> None:
        p = self.resolve(props)
        allowed = ALARM_ARGUMENTS
        args = {k: v for k, v in p.items() if k in allowed}
        args.setdefault("AlarmName", f"local-{logical}")
        self.cloud.client("cloudwatch").put_metric_alarm(**args)
        self.physical[logical] = args["AlarmName"]
        self.arns[logical] = f"arn:aws:cloudwatch:{self.cloud.region}:{self.account_id}:alarm:{args['AlarmName']}"

    def _create_Events_Rule(self, logical: str, props: dict[str, Any]) -> None:
        """Rules on alarm state changes are kept for the alarm evaluator, which delivers events to them."""
        rule = self.resolve(props)
        if rule.get("EventPattern"):
            self.cloud.alarms.rules.append(rule)
        self.physical[logical] = rule.get("Name", f"local-{logical}")
