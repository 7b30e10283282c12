"""CloudFormation: the synthesized templates deployed into the local cloud, resource by resource."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck.localcloud.cloudwatch import ALARM_ARGUMENTS

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# What the app's templates are made from: cdk.json's own "watch" list (what `cdk watch` re-synthesizes on),
# else these.
_SYNTH_INPUTS = ("app.py", "cdk.json", "infra/**", "lambdas/**", "modeldeck/**", "models/**")
SYNTH_RECORD = "modeldeck-synth.json"  # in the cloud assembly: the digest of its sources, and how long it took


def assembly_templates(
    cdk_out: Path, progress: Callable[[str], None] = lambda msg: None
) -> list[dict[str, Any]] | None:
    """The app's templates, synthesizing the cloud assembly first when it is missing or was synthesized from
    other sources (a content digest of the files cdk.json's "watch" names: touching a file or checking out the
    same tree again does not re-synthesize). None when there is no CDK app. Concurrent callers synthesize once.

    The message says why, and the time the last synthesis here measured (or none: the first one)."""
    import subprocess
    import time

    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return None
    cdk_out = cdk_out.resolve()
    with _assembly_lock(cdk_out):
        digest = source_digest()
        record = _synth_record(cdk_out)
        if not (cdk_out / "manifest.json").is_file() or record.get("sources") != digest:
            why = "its sources changed" if record else "no assembly synthesized from these sources"
            took = record.get("seconds")
            estimate = f"the last synthesis here took {took:.1f} s" if took is not None else "expect 15-30 s"
            progress(f"synthesizing the CDK app into {cdk_out} ({why}; {estimate})...")
            # The local cloud runs handlers from the repository, so the Lambda bundles' pip layer is skipped.
            env = {
                **os.environ,
                "CDK_OUTDIR": str(cdk_out),
                "MODELDECK_BUNDLING": "stub",
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            }
            started = time.monotonic()
            done = subprocess.run([sys.executable, str(app)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"CDK synth failed:\n{done.stderr[-2000:]}")
            seconds = time.monotonic() - started
            # Written last, and atomically: a reader (a running `modeldeck serve`) sees a complete assembly.
            tmp = cdk_out / f".{SYNTH_RECORD}.tmp"
            tmp.write_text(json.dumps({"sources": digest, "seconds": round(seconds, 1)}))
            tmp.replace(cdk_out / SYNTH_RECORD)
            progress(f"synthesized in {seconds:.1f} s")
        return load_templates(cdk_out)


@contextmanager
def _assembly_lock(cdk_out: Path) -> Iterator[None]:
    """Held while an assembly is synthesized or read, so no reader sees a half-written one."""
    import fcntl

    cdk_out.parent.mkdir(parents=True, exist_ok=True)
    with open(cdk_out.parent / f".{cdk_out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def synthesized_templates(cdk_out: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The templates of the assembly in ``cdk_out`` as it is (never synthesizing), with its source digest:
    what a running ``modeldeck serve`` deploys after another command re-synthesized the app."""
    cdk_out = cdk_out.resolve()
    with _assembly_lock(cdk_out):
        return assembly_digest(cdk_out), load_templates(cdk_out)


def assembly_digest(cdk_out: Path) -> str | None:
    """The source digest the assembly in ``cdk_out`` was synthesized from (None if unknown): two assemblies
    with the same digest hold the same templates."""
    return _synth_record(cdk_out).get("sources")


def _synth_record(cdk_out: Path) -> dict[str, Any]:
    try:
        record = json.loads((cdk_out / SYNTH_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def source_digest() -> str:
    """A sha256 over the path and content of every file the templates are synthesized from."""
    import hashlib

    try:
        cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    except (OSError, ValueError):
        cdk_json = {}
    watch = (cdk_json.get("watch") or {}).get("include")
    patterns = list(watch) if isinstance(watch, list) else list(_SYNTH_INPUTS)
    # The specs are read from the configured models_dir, wherever it is.
    models_dir = ((cdk_json.get("context") or {}).get("modeldeck") or {}).get("models_dir")
    if isinstance(models_dir, str):
        patterns.append(f"{models_dir.rstrip('/')}/**")
    files: set[Path] = set()
    for pattern in patterns:
        # Before Python 3.13 a trailing "**" matches directories only: "infra/**" means every file under infra/.
        found = (REPO_ROOT / pattern[:-3]).rglob("*") if pattern.endswith("/**") else REPO_ROOT.glob(pattern)
        files.update(p for p in found if p.is_file())
    digest = hashlib.sha256()
    for path in sorted(files):
        if "__pycache__" in path.parts:
            continue
        name = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        digest.update(name.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


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

    Deploying again over a live local cloud follows CloudFormation's stack update rules ("Update behaviors
    of stack resources"; each resource type's reference): a resource whose properties are unchanged is
    not touched; a function is updated in place; an ``AWS::Lambda::Version`` whose properties changed is
    replaced, i.e. published anew, which fails as CloudFormation does ("A version for this Lambda function
    exists") when the function has not changed since its last published version; an alias is updated in
    place; an alarm is put again (PutMetricAlarm keeps its state); a state machine is updated.
    """

    def __init__(self, cloud: LocalCloud, account_id: str = "123456789012") -> None:
        self.cloud = cloud
        self.account_id = account_id
        self.physical: dict[str, Any] = {}
        self.arns: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.exports: dict[str, Any] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, str] = {}
        self._rules: dict[str, dict[str, Any]] = {}
        self._role_arn: str | None = None
        # Called after each deployment (the IAM enforcer takes the templates' policies from there).
        self.on_deployed: list[Callable[[TemplateDeployer], None]] = []

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
            for logical in self._order(resources):
                resource = resources[logical]
                previous = self.resources.get(logical)
                if previous is None:
                    self._create(logical, resource)
                elif self._changed(previous, resource):
                    self._update(logical, resource)
                self.resources[logical] = json.loads(json.dumps(resource))
            for name, output in template.get("Outputs", {}).items():
                value = self.resolve(output["Value"])
                self.outputs[name] = value
                if "Export" in output:
                    self.exports[self.resolve(output["Export"]["Name"])] = value
        for callback in self.on_deployed:
            callback(self)

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

    @staticmethod
    def _changed(previous: dict[str, Any], resource: dict[str, Any]) -> bool:
        """CloudFormation updates a resource only when its template definition changed."""
        keys = ("Type", "Properties")
        return any(previous.get(k) != resource.get(k) for k in keys)

    def _create(self, logical: str, resource: dict[str, Any]) -> None:
        self._apply("_create_", logical, resource)

    def _update(self, logical: str, resource: dict[str, Any]) -> None:
        """A changed resource: updated in place, or replaced where CloudFormation replaces that type."""
        self._apply("_update_", logical, resource)

    def _apply(self, prefix: str, logical: str, resource: dict[str, Any]) -> None:
        kind = resource["Type"]
        props = resource.get("Properties", {})
        handler = getattr(self, prefix + kind.replace("::", "_").replace("AWS_", "", 1), None)
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
            # The template's code location (an asset hash) makes CodeSha256 change with the code, as on AWS.
            zf.writestr("code.json", json.dumps(props.get("Code"), sort_keys=True, default=str))
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
        lam = self.cloud.client("lambda")
        if logical in self.physical:
            # Updated in place: a new $LATEST configuration (and code); published versions stay as they were.
            config = {k: spec[k] for k in ("Environment", "MemorySize", "Timeout", "Description")}
            if "Handler" in spec:
                config.update(Handler=spec["Handler"], Runtime=spec["Runtime"])
            lam.update_function_configuration(FunctionName=name, **config)
            if "ZipFile" in spec["Code"]:
                lam.update_function_code(FunctionName=name, ZipFile=spec["Code"]["ZipFile"])
            fn = lam.get_function_configuration(FunctionName=name)
            self.cloud.lambdas.discard(name)
        else:
            fn = lam.create_function(**spec)
        # Where Lambda sends the function's stdout (its LoggingConfig, or /aws/lambda/{name}).
        log_group = (self.resolve(props.get("LoggingConfig") or {})).get("LogGroup") or f"/aws/lambda/{name}"
        self.cloud.logs.attach(name, str(log_group))
        self.physical[logical] = name
        self.arns[logical] = fn["FunctionArn"]

    _update_Lambda_Function = _create_Lambda_Function

    def _create_Lambda_Version(self, logical: str, props: dict[str, Any]) -> None:
        """Publish $LATEST. CloudFormation fails the version (and the stack update) when the function has not
        changed since its last published version: PublishVersion would only return that version again."""
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        lam = self.cloud.client("lambda")
        latest = lam.get_function_configuration(FunctionName=fn_name)
        published = [
            v for v in lam.list_versions_by_function(FunctionName=fn_name)["Versions"] if v["Version"] != "$LATEST"
        ]
        if published:
            last = max(published, key=lambda v: int(v["Version"]))
            if _version_identity(last) == _version_identity(latest):
                raise DeployError(
                    f"{logical}: A version for this Lambda function exists ( {last['Version']} ). "
                    "Modify the function to create a new version."
                )
        version = lam.publish_version(FunctionName=fn_name, Description=str(props.get("Description", "")))
        self.physical[logical] = version["FunctionArn"]
        self.arns[logical] = version["FunctionArn"]
        self.versions[logical] = version["Version"]

    # Every property of AWS::Lambda::Version requires replacement: a changed version is a new publish.
    _update_Lambda_Version = _create_Lambda_Version

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

    def _update_Lambda_Alias(self, logical: str, props: dict[str, Any]) -> None:
        """A changed alias is updated in place (to the template's version and routing)."""
        fn_name = self._fn_name(self.resolve(props["FunctionName"]))
        version = str(self.resolve(props["FunctionVersion"])).rsplit(":", 1)[-1]
        routing = self.resolve(props.get("RoutingConfig") or {})
        weights = {
            str(w["FunctionVersion"]).rsplit(":", 1)[-1]: float(w["FunctionWeight"])
            for w in routing.get("AdditionalVersionWeights", [])
        }
        self.cloud.client("lambda").update_alias(
            FunctionName=fn_name,
            Name=props["Name"],
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": weights},
        )

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
        sfn = self.cloud.client("stepfunctions")
        if logical in self.physical:
            sfn.update_state_machine(stateMachineArn=self.physical[logical], definition=text)
            return
        arn = sfn.create_state_machine(name=name, definition=text, roleArn=self._role())["stateMachineArn"]
        self.physical[logical] = arn
        self.arns[logical] = arn

    _update_StepFunctions_StateMachine = _create_StepFunctions_StateMachine

    def _create_CloudWatch_Alarm(self, logical: str, props: dict[str, Any]) -> None:
        p = self.resolve(props)
        allowed = ALARM_ARGUMENTS
        args = {k: v for k, v in p.items() if k in allowed}
        args.setdefault("AlarmName", f"local-{logical}")
        self.cloud.client("cloudwatch").put_metric_alarm(**args)
        self.physical[logical] = args["AlarmName"]
        self.arns[logical] = f"arn:aws:cloudwatch:{self.cloud.region}:{self.account_id}:alarm:{args['AlarmName']}"

    # PutMetricAlarm again (it keeps the alarm's state). A renamed alarm would be a replacement on AWS; the
    # old one is left in place here.
    _update_CloudWatch_Alarm = _create_CloudWatch_Alarm

    def _create_IAM_Role(self, logical: str, props: dict[str, Any]) -> None:
        """Roles are not created in moto; their name and ARN are recorded for the policies that name them
        (the local cloud's ``iam`` module authorizes calls with the templates' policies)."""
        name = self._name(logical, props.get("RoleName"))
        self.physical[logical] = name
        self.arns[logical] = f"arn:aws:iam::{self.account_id}:role/{name}"

    _update_IAM_Role = _create_IAM_Role

    def _create_ApiGateway_Stage(self, logical: str, props: dict[str, Any]) -> None:
        """A stage is served by the local gateway; its Ref is its name (as in the functions' permissions)."""
        self.physical[logical] = str(self.resolve(props.get("StageName", logical)))

    _update_ApiGateway_Stage = _create_ApiGateway_Stage

    def _create_KMS_Key(self, logical: str, props: dict[str, Any]) -> None:
        """Keys are recorded (their key policy is evaluated by ``iam``); SNS does not encrypt locally."""
        self.physical[logical] = logical
        self.arns[logical] = f"arn:aws:kms:{self.cloud.region}:{self.account_id}:key/{logical}"

    def _create_Events_Rule(self, logical: str, props: dict[str, Any]) -> None:
        """Rules on alarm state changes are kept for the alarm evaluator, which delivers events to them; rules
        on a schedule run on the virtual clock (``events.Schedules``)."""
        rule = self.resolve(props)
        name = rule.get("Name", f"local-{logical}")
        self.arns[logical] = f"arn:aws:events:{self.cloud.region}:{self.account_id}:rule/{name}"
        self.cloud.schedules.put(logical, rule, self.arns[logical])
        rules = self.cloud.alarms.rules
        if logical in self._rules:
            rules[:] = [r for r in rules if r is not self._rules.pop(logical)]
        if rule.get("EventPattern"):
            rules.append(rule)
            self._rules[logical] = rule
        self.physical[logical] = rule.get("Name", f"local-{logical}")

    _update_Events_Rule = _create_Events_Rule

    def _create_Logs_SubscriptionFilter(self, logical: str, props: dict[str, Any]) -> None:
        """Subscription filters are kept by the local CloudWatch Logs (``logs.Logs``)."""
        resolved = self.resolve(props)
        resolved.setdefault("FilterName", logical)
        self.cloud.logs.put_subscription_filter(resolved)
        self.physical[logical] = resolved["FilterName"]

    _update_Logs_SubscriptionFilter = _create_Logs_SubscriptionFilter

    def _create_KinesisFirehose_DeliveryStream(self, logical: str, props: dict[str, Any]) -> None:
        """Delivery streams are run by the local Firehose (``firehose.Firehose``)."""
        resolved = self.resolve(props)
        resolved.setdefault("DeliveryStreamName", f"local-{logical}"[:64])
        self.physical[logical] = resolved["DeliveryStreamName"]
        self.arns[logical] = self.cloud.firehose.create(resolved)

    _update_KinesisFirehose_DeliveryStream = _create_KinesisFirehose_DeliveryStream


class DeployError(RuntimeError):
    """A stack deployment failed where CloudFormation would fail it (the message is CloudFormation's)."""


def _version_identity(config: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two function versions the same to PublishVersion: code and configuration."""
    return (
        config.get("CodeSha256"),
        json.dumps(config.get("Environment", {}).get("Variables", {}), sort_keys=True),
        config.get("Handler"),
        config.get("Runtime"),
        config.get("MemorySize"),
        config.get("Timeout"),
    )


def with_api_throttle(templates: list[dict[str, Any]], rate: float, burst: int) -> list[dict[str, Any]]:
    """The templates as ``cdk.json``'s ``api.throttle_rate``/``throttle_burst`` would make them: the usage
    plan's and the stage's throttling (cheaper than synthesizing a variant, for tests and load benchmarks)."""
    import copy

    templates = copy.deepcopy(templates)
    for template in templates:
        for res in template["Resources"].values():
            if res["Type"] == "AWS::ApiGateway::UsagePlan":
                res["Properties"]["Throttle"] = {"RateLimit": rate, "BurstLimit": burst}
            elif res["Type"] == "AWS::ApiGateway::Stage":
                for setting in res["Properties"].get("MethodSettings", []):
                    setting.update(ThrottlingRateLimit=rate, ThrottlingBurstLimit=burst)
    return templates
