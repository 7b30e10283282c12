"""IAM: every AWS call a handler or a state machine makes is authorized as AWS authorizes it.

AWS's "Policy evaluation logic" decides each request from the caller's identity policies and the resource's
policy (a bucket, topic, key or function policy), with explicit Deny first, wildcards, ``NotAction`` /
``NotResource`` and condition keys. The local cloud does not evaluate policies itself: it asks
``@cloud-copilot/iam-simulate`` (npm, a maintained implementation of that logic, with conditions and resource
policies; moto's own enforcement ignores conditions and S3's 403 rule), through one long-lived node process
(``iam_eval.js``), and caches each decision per (principal, action, resource, context): decisions are
deterministic given the deployed policies, so the hot path is a dictionary lookup.

Who is calling: a Lambda handler runs as its function's execution role from the templates, a state
machine's tasks as the state machine's role, an EventBridge target as the target's role, an alarm action as
``cloudwatch.amazonaws.com`` (with ``aws:SourceArn`` = the alarm's ARN and ``aws:SourceAccount``), API
Gateway's invocations as ``apigateway.amazonaws.com``. The caller outside those (the CLI, tests, the local
cloud's own bookkeeping) acts as an administrator, as a developer's credentials would. Resources and
principals not deployed from the templates (functions created through the API with the local default role)
are not restricted.

What AWS answers to a denied call is emulated per service ("Troubleshoot access denied error messages"):
S3 ``AccessDenied`` 403 (a HEAD: ``403`` with no body), Lambda ``AccessDeniedException`` 403, SNS
``AuthorizationError`` 403, CloudWatch ``AccessDenied`` 403, Step Functions and KMS ``AccessDeniedException``
400. S3's rule for a missing key ("GetObject", permissions): without ``s3:ListBucket`` the answer is 403
AccessDenied, not 404 NoSuchKey. Calls are made over TLS (``aws:SecureTransport`` is true), so the bucket and
topic policies' TLS Deny is evaluated but does not match.

Interception is a botocore ``before-call`` handler registered on every client (as moto registers its own):
production code is unaware of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modeldeck.localcloud.cloudformation import TemplateDeployer

_SCRIPT = Path(__file__).with_name("iam_eval.js")
_REPO = Path(__file__).resolve().parents[2]
_PARAMS = "modeldeck_iam_params"

# IAM's service prefix per botocore service name (where the signing name differs or is ambiguous).
_PREFIX = {"stepfunctions": "states", "cloudwatch": "cloudwatch", "s3": "s3", "lambda": "lambda", "sns": "sns"}
# Operations whose IAM action is not "<prefix>:<OperationName>" (Service Authorization Reference).
_ACTION = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "DeleteObjects"): "s3:DeleteObject",
    ("lambda", "Invoke"): "lambda:InvokeFunction",
    ("lambda", "InvokeAsync"): "lambda:InvokeFunction",
    ("lambda", "GetFunctionConfiguration"): "lambda:GetFunctionConfiguration",
}
# A denied call's error, as each service answers it: (code, HTTP status).
_DENIED = {
    "s3": ("AccessDenied", 403),
    "lambda": ("AccessDeniedException", 403),
    "sns": ("AuthorizationError", 403),
    "cloudwatch": ("AccessDenied", 403),
    "sts": ("AccessDenied", 403),
    "iam": ("AccessDenied", 403),
}


@dataclass(frozen=True)
class Principal:
    """Who makes a call: a role (``arn`` and its identity policies) or a service principal (``arn`` is e.g.
    ``cloudwatch.amazonaws.com``, with the request's ``aws:SourceArn``/``aws:SourceAccount`` in ``context``)."""

    arn: str
    policies: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    context: tuple[tuple[str, str], ...] = ()
    session: str = field(default="", compare=False)
    # Decisions are cached per principal: two principals are the same only with the same policies.
    fingerprint: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", json.dumps(self.policies, sort_keys=True))


_ACTING = threading.local()


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """AWS calls made on this thread run as ``principal`` (None: unrestricted, as an administrator's)."""
    previous = getattr(_ACTING, "principal", None)
    _ACTING.principal = principal
    try:
        yield
    finally:
        _ACTING.principal = previous


def current_principal() -> Principal | None:
    """Who this thread's AWS calls run as (None: unrestricted)."""
    return getattr(_ACTING, "principal", None)


def as_administrator() -> AbstractContextManager[None]:
    """AWS calls made on this thread are not restricted (the local cloud's own bookkeeping)."""
    return acting_as(None)


class EvaluatorError(RuntimeError):
    """A request the evaluator could not judge (an unknown action): an emulation gap, not a denial."""


class InvokeDenied(RuntimeError):
    """A service's invocation of a function that the function's resource policy does not allow (API Gateway
    answers 500 for it, "Invalid permissions on Lambda function")."""


class Evaluator:
    """``@cloud-copilot/iam-simulate`` in one node process, answering batches of simulations."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (_REPO / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
            raise RuntimeError(
                "the local cloud's IAM evaluator needs node and `npm ci` (@cloud-copilot/iam-simulate, package.json)"
            )
        self._proc = subprocess.Popen(
            [node, str(_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_REPO, bufsize=1
        )
        self._lock = threading.Lock()

    def decide(self, simulations: list[dict[str, Any]]) -> list[Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(simulations) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the IAM evaluator (iam_eval.js) exited")
        return list(json.loads(line))

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


_EVALUATOR: Evaluator | None = None
_EVALUATOR_LOCK = threading.Lock()


def evaluator() -> Evaluator:
    """The process-wide evaluator (started once: node takes about 0.4 s to load the package)."""
    global _EVALUATOR
    with _EVALUATOR_LOCK:
        if _EVALUATOR is None or _EVALUATOR._proc.poll() is not None:
            _EVALUATOR = Evaluator()
        return _EVALUATOR


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _document(statements: list[Any]) -> dict[str, Any] | None:
    return {"Version": "2012-10-17", "Statement": statements} if statements else None


class Policies:
    """The deployed templates' IAM: roles and their policies, who runs as which role, resource policies."""

    def __init__(self, account: str, region: str) -> None:
        self.account, self.region = account, region
        self.roles: dict[str, Principal] = {}  # role ARN -> principal
        self.function_roles: dict[str, str] = {}  # function name -> role ARN
        self.state_machine_roles: dict[str, str] = {}  # state machine ARN -> role ARN
        self.topic_policies: dict[str, dict[str, Any]] = {}
        self.topic_keys: dict[str, str] = {}
        self.key_policies: dict[str, dict[str, Any]] = {}
        self.bucket_policies: dict[str, dict[str, Any]] = {}
        self.function_policies: dict[str, list[dict[str, Any]]] = {}  # function ARN (maybe qualified)

    @classmethod
    def from_deployer(cls, deployer: TemplateDeployer) -> Policies:
        """Resolve the deployed templates' policies with the deployer's physical names and ARNs."""
        out = cls(deployer.account_id, deployer.cloud.region)
        resources = deployer.resources
        resolve = deployer.resolve

        def role_arn(value: Any) -> str:
            return str(resolve(value))

        identity: dict[str, list[Any]] = {}
        for logical, res in resources.items():
            kind, props = res["Type"], res.get("Properties") or {}
            if kind == "AWS::IAM::Role":
                arn = deployer.arns[logical]
                identity.setdefault(arn, []).extend(resolve(p["PolicyDocument"]) for p in props.get("Policies", []))
            elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                for role in props.get("Roles", []):
                    name = str(resolve(role))
                    arn = name if name.startswith("arn:") else f"arn:aws:iam::{out.account}:role/{name}"
                    identity.setdefault(arn, []).append(resolve(props["PolicyDocument"]))
            elif kind == "AWS::Lambda::Function" and "Role" in props and logical in deployer.physical:
                out.function_roles[deployer.physical[logical]] = role_arn(props["Role"])
            elif kind == "AWS::StepFunctions::StateMachine" and "RoleArn" in props and logical in deployer.physical:
                out.state_machine_roles[deployer.physical[logical]] = role_arn(props["RoleArn"])
            elif kind == "AWS::SNS::TopicPolicy":
                for topic in props.get("Topics", []):
                    doc = out.topic_policies.setdefault(str(resolve(topic)), {"Version": "2012-10-17", "Statement": []})
                    doc["Statement"] += _as_list(resolve(props["PolicyDocument"])["Statement"])
            elif kind == "AWS::SNS::Topic" and props.get("KmsMasterKeyId") and logical in deployer.arns:
                out.topic_keys[deployer.arns[logical]] = str(resolve(props["KmsMasterKeyId"]))
            elif kind == "AWS::KMS::Key" and logical in deployer.arns:
                out.key_policies[deployer.arns[logical]] = resolve(props["KeyPolicy"])
            elif kind == "AWS::S3::BucketPolicy":
                doc = out.bucket_policies.setdefault(
                    str(resolve(props["Bucket"])), {"Version": "2012-10-17", "Statement": []}
                )
                doc["Statement"] += _as_list(resolve(props["PolicyDocument"])["Statement"])
            elif kind == "AWS::Lambda::Permission":
                out._add_permission(logical, resolve(props))
        for logical, res in resources.items():
            if res["Type"] == "AWS::IAM::Role":
                arn = deployer.arns[logical]
                out.roles[arn] = Principal(arn, tuple(identity.get(arn, ())), session=logical)
        return out

    def _add_permission(self, logical: str, props: dict[str, Any]) -> None:
        """A function policy statement as Lambda builds it from AddPermission (``AWS::Lambda::Permission``)."""
        target = str(props["FunctionName"])
        if not target.startswith("arn:"):
            target = f"arn:aws:lambda:{self.region}:{self.account}:function:{target}"
        principal = str(props["Principal"])
        statement: dict[str, Any] = {
            "Sid": logical,
            "Effect": "Allow",
            "Principal": {"Service": principal} if principal.endswith(".amazonaws.com") else {"AWS": principal},
            "Action": props["Action"],
            "Resource": target,
        }
        condition: dict[str, Any] = {}
        if "SourceArn" in props:
            condition["ArnLike"] = {"AWS:SourceArn": props["SourceArn"]}
        if "SourceAccount" in props:
            condition["StringEquals"] = {"AWS:SourceAccount": props["SourceAccount"]}
        if condition:
            statement["Condition"] = condition
        self.function_policies.setdefault(target, []).append(statement)

    def role(self, arn: str | None) -> Principal | None:
        return self.roles.get(arn) if arn else None

    def function_principal(self, function_name: str) -> Principal | None:
        """The execution role a function's handler runs as (None: not deployed from the templates)."""
        return self.role(self.function_roles.get(function_name))

    def state_machine_principal(self, arn: str) -> Principal | None:
        return self.role(self.state_machine_roles.get(arn))

    def function_policy(self, function_arn: str) -> dict[str, Any] | None:
        """The resource policy of a function ARN (a qualified ARN has its own, as on Lambda)."""
        return _document(self.function_policies.get(function_arn, []))

    def resource_policy(self, action: str, resource: str) -> dict[str, Any] | None:
        """The resource's policy, where AWS applies one."""
        if resource.startswith("arn:aws:s3:::"):
            return self.bucket_policies.get(resource[len("arn:aws:s3:::") :].split("/", 1)[0])
        if resource.startswith("arn:aws:sns:"):
            return self.topic_policies.get(resource)
        if resource.startswith("arn:aws:kms:"):
            return self.key_policies.get(resource)
        if resource.startswith("arn:aws:lambda:"):
            return self.function_policy(resource)
        return None


def service_principal(service: str, account: str, source_arn: str | None = None) -> Principal:
    """A service principal acting on behalf of one of our resources (``aws:SourceArn`` is that resource)."""
    context = [("aws:SourceAccount", account)]
    if source_arn:
        context.append(("aws:SourceArn", source_arn))
    return Principal(service, (), tuple(context))


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


class Enforcer:
    """Authorizes the calls made while a principal acts (see the module docstring), with cached decisions."""

    def __init__(self, account: str, region: str) -> None:
        self.account, self.region = account, region
        self.policies = Policies(account, region)
        self._cache: dict[tuple[Principal, Request], str] = {}
        self._lock = threading.Lock()
        self.denials: list[tuple[str, str, str]] = []
        self.failed_deliveries: list[tuple[str, str]] = []

    def load(self, deployer: TemplateDeployer) -> None:
        """Take the deployed templates' policies (again, after a redeploy: cached decisions are dropped)."""
        self.policies = Policies.from_deployer(deployer)
        with self._lock:
            self._cache.clear()

    def policies_principal(self, function_name: str) -> Principal | None:
        """The execution role a function's handler runs as, from the deployed templates."""
        return self.policies.function_principal(function_name)

    def state_machine_principal(self, arn: str) -> Principal | None:
        """The role a state machine's tasks run as, from the deployed templates."""
        return self.policies.state_machine_principal(arn)

    # -- decisions --------------------------------------------------------------------------------------------
    def decide(self, principal: Principal, requests: list[Request]) -> list[str]:
        """AWS's decision on each request: "Allowed", "ExplicitlyDenied" or "ImplicitlyDenied"."""
        keys = [(principal, r) for r in requests]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
        missing = [k for k in dict.fromkeys(keys) if k not in known]
        if missing:
            answers = evaluator().decide([self._simulation(p, r) for p, r in missing])
            for (p, r), answer in zip(missing, answers, strict=True):
                if isinstance(answer, dict):
                    raise EvaluatorError(
                        f"the IAM evaluator cannot judge {r.action} on {r.resource}: {answer['error']}"
                    )
                known[(p, r)] = answer
            with self._lock:
                self._cache.update({k: known[k] for k in missing})
        return [known[k] for k in keys]

    def allowed(self, principal: Principal, action: str, resource: str, **context: str) -> bool:
        """Whether ``principal`` may do ``action`` on ``resource`` (extra condition keys in ``context``)."""
        request = Request(action, resource, tuple(sorted(context.items())))
        return self.decide(principal, [request])[0] == "Allowed"

    def refusal(self, principal: Principal, action: str, resource: str) -> str | None:
        """Why AWS would refuse ``principal`` this request (None: allowed); for services acting on their own."""
        answer = self.decide(principal, [Request(action, resource)])[0]
        if answer == "Allowed":
            return None
        self.denials.append((principal.arn, action, resource))
        return f"{principal.arn} is not authorized to perform: {action} on resource: {resource} ({answer})"

    @contextmanager
    def invoking_as(self, service: str, arn_service: str, resource: str) -> Iterator[None]:
        """Calls made here are ``service``'s on behalf of our resource ``arn:aws:{arn_service}:...:{resource}``
        (its ``aws:SourceArn``): e.g. API Gateway invoking a function for a method of a stage."""
        source = f"arn:aws:{arn_service}:{self.region}:{self.account}:{resource}"
        with acting_as(service_principal(service, self.account, source)):
            yield

    def authorize_invoke(self, function_name: str, qualifier: str | None) -> None:
        """Lambda's check of an invocation by a service principal (API Gateway, EventBridge, SNS): the function
        policy of the ARN invoked (a qualified ARN has its own) must allow it. Raises ``InvokeDenied``."""
        principal = getattr(_ACTING, "principal", None)
        if principal is None or principal.arn.startswith("arn:"):
            return  # an identity's Invoke was authorized at its API call
        params = {"FunctionName": function_name, **({"Qualifier": qualifier} if qualifier else {})}
        (request,) = self.requests("lambda", "Invoke", params)
        refused = self.refusal(principal, request.action, request.resource)
        if refused:
            raise InvokeDenied(refused)

    def topic_refusal(self, principal: Principal, topic_arn: str) -> str | None:
        """Why AWS would refuse a service principal's Publish to a topic (None: allowed). A topic without a
        policy in the templates has SNS's default policy, which lets the owner's alarms publish."""
        if topic_arn not in self.policies.topic_policies:
            return None
        return self.refusal(principal, "sns:Publish", topic_arn) or self.refusal_by_key(principal, topic_arn)

    def refusal_by_key(self, principal: Principal, topic_arn: str) -> str | None:
        """Why publishing to an encrypted topic is refused by its KMS key (None: not encrypted, or allowed):
        SNS generates a data key and decrypts with it on the publisher's behalf (SNS developer guide,
        "Encryption at rest": the publisher needs kms:GenerateDataKey* and kms:Decrypt on the key)."""
        key = self.policies.topic_keys.get(topic_arn)
        if key is None:
            return None
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):
            refused = self.refusal(principal, action, key)
            if refused:
                return refused
        return None

    def _simulation(self, principal: Principal, request: Request) -> dict[str, Any]:
        context = {"aws:SecureTransport": "true", "aws:RequestedRegion": self.region, **dict(principal.context)}
        context.update(dict(request.context))
        out: dict[str, Any] = {
            "request": {
                "principal": principal.arn,
                "action": request.action,
                "resource": {"resource": request.resource, "accountId": self.account},
                "contextVariables": context,
            },
            "identityPolicies": [{"name": f"p{i}", "policy": p} for i, p in enumerate(principal.policies)],
            "serviceControlPolicies": [],
            "resourceControlPolicies": [],
        }
        policy = self.policies.resource_policy(request.action, request.resource)
        if policy is not None:
            out["resourcePolicy"] = policy
        return out

    # -- botocore --------------------------------------------------------------------------------------------
    def check(self, service: str, operation: str, params: Mapping[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        """The denial response for a call of the acting principal, or None when AWS would let it through."""
        principal = getattr(_ACTING, "principal", None)
        if principal is None:
            return None
        requests = self.requests(service, operation, params)
        for request, answer in zip(requests, self.decide(principal, requests), strict=True):
            if answer != "Allowed":
                return self._denied(principal, service, operation, request, answer)
        if service == "s3" and operation in ("GetObject", "HeadObject") and not self._exists(params):
            # S3 answers 404 only to a caller who may list the prefix; anyone else learns nothing: 403.
            bucket, key = params["Bucket"], params["Key"]
            listing = Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", (("s3:prefix", key),))
            answer = self.decide(principal, [listing])[0]
            if answer != "Allowed":
                return self._denied(principal, service, operation, Request("s3:ListBucket", listing.resource), answer)
        return None

    def requests(self, service: str, operation: str, params: Mapping[str, Any]) -> list[Request]:
        """The IAM requests one API call makes (action, resource ARN, condition keys)."""
        prefix = _PREFIX.get(service, service)
        action = _ACTION.get((service, operation), f"{prefix}:{operation}")
        region, account = self.region, self.account
        if service == "s3":
            bucket = params.get("Bucket", "")
            if operation == "DeleteObjects":
                keys = [o["Key"] for o in (params.get("Delete") or {}).get("Objects", [])]
                return [Request(action, f"arn:aws:s3:::{bucket}/{k}") for k in keys]
            if operation == "CopyObject":
                source = params.get("CopySource")
                src = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else str(source).lstrip("/")
                return [
                    Request("s3:GetObject", f"arn:aws:s3:::{src.split('?')[0]}"),
                    Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{params['Key']}"),
                ]
            if "Key" in params:
                return [Request(action, f"arn:aws:s3:::{bucket}/{params['Key']}")]
            context: list[tuple[str, str]] = []
            if action == "s3:ListBucket":
                context.append(("s3:prefix", str(params.get("Prefix", ""))))
                if params.get("Delimiter"):
                    context.append(("s3:delimiter", str(params["Delimiter"])))
            return [Request(action, f"arn:aws:s3:::{bucket}", tuple(context))]
        if service == "lambda":
            name = str(params.get("FunctionName", "*"))
            if name.startswith("arn:"):
                arn = name
            else:
                base, _, qualifier = name.partition(":")
                arn = f"arn:aws:lambda:{region}:{account}:function:{base}" + (f":{qualifier}" if qualifier else "")
            if params.get("Qualifier") and operation in ("Invoke", "GetFunctionConfiguration", "GetFunction"):
                arn = f"{arn}:{params['Qualifier']}"
            return [Request(action, arn)]
        if service == "sns":
            topic = str(params.get("TopicArn") or params.get("TargetArn") or "*")
            key = self.policies.topic_keys.get(topic) if operation == "Publish" else None
            if key is None:
                return [Request(action, topic)]
            # An encrypted topic: SNS uses the key on the publisher's behalf ("Encryption at rest": the publisher
            # needs kms:GenerateDataKey* and kms:Decrypt), through SNS (kms:ViaService).
            via = (("kms:CallerAccount", account), ("kms:ViaService", f"sns.{region}.amazonaws.com"))
            return [Request(action, topic), Request("kms:GenerateDataKey", key, via), Request("kms:Decrypt", key, via)]
        if service == "stepfunctions":
            arn = params.get("executionArn") or params.get("stateMachineArn") or "*"
            return [Request(action, str(arn))]
        if service == "cloudwatch":
            alarm = f"arn:aws:cloudwatch:{region}:{account}:alarm:"
            names = _as_list(params.get("AlarmNames") or params.get("AlarmName") or [])
            if operation == "PutMetricData":
                return [Request(action, "*", (("cloudwatch:namespace", str(params.get("Namespace", ""))),))]
            if names:
                return [Request(action, alarm + str(n)) for n in names]
            if operation in ("DescribeAlarms", "DescribeAlarmHistory"):
                return [Request(action, alarm + "*")]
            return [Request(action, "*")]
        if service == "kms":
            key = str(params.get("KeyId", "*"))
            if not key.startswith("arn:"):
                key = f"arn:aws:kms:{region}:{account}:key/{key}"
            return [Request(action, key)]
        return [Request(action, "*")]

    def _exists(self, params: Mapping[str, Any]) -> bool:
        from moto.s3.models import s3_backends

        try:
            bucket = s3_backends[self.account]["aws"].buckets[params["Bucket"]]
        except KeyError:
            return True  # NoSuchBucket is S3's answer, with or without permissions
        return params["Key"] in bucket.keys

    def _denied(
        self, principal: Principal, service: str, operation: str, request: Request, answer: str
    ) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        code, status = _DENIED.get(service, ("AccessDeniedException", 400))
        if service == "sns" and request.action.startswith("kms:"):
            code, status = "KMSAccessDenied", 400  # SNS's KMSAccessDeniedException: the key refused the publisher
        who = principal.arn
        if who.startswith("arn:aws:iam::") and ":role/" in who:
            who = f"arn:aws:sts::{self.account}:assumed-role/{who.rsplit('/', 1)[-1]}/{principal.session or 'local'}"
        why = "with an explicit deny" if answer == "ExplicitlyDenied" else "because no policy allows it"
        message = f"User: {who} is not authorized to perform: {request.action} on resource: {request.resource} {why}"
        if service == "s3":
            message = "Access Denied"
            if operation == "HeadObject":
                code, message = "403", "Forbidden"
        self.denials.append((principal.arn, request.action, request.resource))
        http = AWSResponse("https://local", status, {}, None)
        parsed = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        }
        return http, parsed


_ACTIVE: Enforcer | None = None


def _remember_params(params: Any = None, context: Any = None, **_: Any) -> None:
    if _ACTIVE is not None and context is not None and isinstance(params, dict):
        context[_PARAMS] = dict(params)


def _before_call(model: Any = None, context: Any = None, **_: Any) -> Any:
    enforcer = _ACTIVE
    if enforcer is None or getattr(_ACTING, "principal", None) is None or model is None:
        return None
    params = (context or {}).get(_PARAMS, {})
    return enforcer.check(model.service_model.service_name, model.name, params)


def _register() -> None:
    """Hook every botocore client made from now on (and the default boto3 session's), as moto hooks its own."""
    from botocore.handlers import BUILTIN_HANDLERS

    for event, handler in (("before-parameter-build", _remember_params), ("before-call", _before_call)):
        if (event, handler) not in BUILTIN_HANDLERS:
            BUILTIN_HANDLERS.append((event, handler))
    import boto3

    if boto3.DEFAULT_SESSION is not None:
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")
        events.register("before-parameter-build", _remember_params, unique_id="modeldeck-iam-params")
        events.register("before-call", _before_call, unique_id="modeldeck-iam-call")


@contextmanager
def enforcing(enforcer: Enforcer) -> Iterator[Enforcer]:
    """Authorize AWS calls with ``enforcer`` while the local cloud runs."""
    global _ACTIVE
    _register()
    previous, _ACTIVE = _ACTIVE, enforcer
    try:
        yield enforcer
    finally:
        _ACTIVE = previous
