"""Where the deployed resources are: the same lookups on AWS and in the local cloud.

Both read the stacks' outputs (CloudFormation's on AWS, the template deployer's locally) and find each
model's inference function by the ``MODEL_NAME`` its environment pins, so nothing is configured twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modeldeck.errors import ModeldeckError

if TYPE_CHECKING:
    from modeldeck.localcloud import LocalCloud

INFERENCE_HANDLER = "lambdas.inference.handler.lambda_handler"


class Deployment:
    """Names of deployed resources, resolved once per command."""

    def __init__(self, client: Any, outputs: dict[str, str], cloud: LocalCloud | None = None) -> None:
        self.client = client
        self.outputs = outputs
        self.cloud = cloud
        self._functions: dict[str, str] | None = None

    @classmethod
    def from_aws(cls, client: Any, stack_prefix: str) -> Deployment:
        outputs: dict[str, str] = {}
        for page in client("cloudformation").get_paginator("describe_stacks").paginate():
            for stack in page["Stacks"]:
                if stack["StackName"].startswith(stack_prefix):
                    outputs.update({o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])})
        return cls(client, outputs)

    def output(self, key: str, required: bool = True) -> Any:
        if key not in self.outputs and required:
            where = "the local cloud's templates" if self.cloud else "the deployed stacks"
            raise ModeldeckError(f"{where} have no output {key!r}; is the app deployed (`make synth`, `cdk deploy`)?")
        return self.outputs.get(key)

    def _discover(self) -> dict[str, str]:
        if self._functions is None:
            found: dict[str, str] = {}
            for page in self.client("lambda").get_paginator("list_functions").paginate():
                for fn in page["Functions"]:
                    model = fn.get("Environment", {}).get("Variables", {}).get("MODEL_NAME")
                    if model and fn.get("Handler") == INFERENCE_HANDLER:
                        found[model] = fn["FunctionName"]
            self._functions = found
        return self._functions

    def models(self) -> list[str]:
        return sorted(self._discover())

    def function_name(self, model: str) -> str:
        functions = self._discover()
        if model not in functions:
            known = ", ".join(sorted(functions)) or "none"
            raise ModeldeckError(f"no inference function serves model {model!r} (deployed: {known})")
        return functions[model]

    def default_bake_seconds(self) -> int:
        return int(self.outputs.get("CanaryBakeSeconds", 600))

    def while_waiting(self) -> None:
        """Locally, alarms are evaluated by the local cloud while a command waits (CloudWatch does it on AWS)."""
        if self.cloud is not None:
            self.cloud.start_ticker()
