"""The release state machine: gate → shift/bake (looks of the statistical gate)/check (repeated) → promote,
or roll back.

The same ASL runs on AWS and in the local cloud (moto executes it), so there is one orchestration. Each
task invokes the release Lambda with an ``action`` (see ``modeldeck.release``). After each bake a settle
wait lets CloudWatch receive and evaluate the bake's last minutes before the check. Execution input::

    {"model": "breast-cancer", "version": 3, "function_name": "...", "strategy": "canary",
     "steps": 1, "canary_weight": 0.1, "bake_seconds": 600}
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

# Errors worth retrying: Lambda's own service errors and throttles, never the release's refusals.
TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "ClientError",
]


class ReleaseOrchestration(Construct):
    """Builds the release state machine around an existing release Lambda.

    Every task has a path that ends the execution with the lock freed and the alias owned by one version:
    the gate's failures free the lock (``ReleaseLock``); a failure while traffic is split, or while promoting
    or shadowing, rolls back; a task that finds its lock taken (an operator ended the release) moves nothing
    and ends as ``Superseded``. ``timeout`` must cover the longest plan the config allows (the CLI refuses
    longer ones); a lock left by an execution that timed out is taken over by the next release.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        release_function: lambda_.IFunction,
        topic: sns.ITopic,
        timeout: Duration,
        name: str | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, id_)
        self.function = release_function

        refused = sfn.Fail(
            self,
            "Refused",
            error="ReleaseRefused",
            cause="The gate refused the release; nothing changed (see the release record).",
        )
        rolled_back = sfn.Fail(
            self,
            "RolledBack",
            error="RolledBack",
            cause="The canary's alarms, its statistical gate or a failed step rolled the release back.",
        )
        superseded = sfn.Fail(
            self,
            "Superseded",
            error="ReleaseSuperseded",
            cause="An operator ended this release (rollback or promote); it moved no more traffic.",
        )
        rollback_failed = sfn.Fail(
            self,
            "RollbackFailed",
            error="RollbackFailed",
            cause="Rolling back kept failing; `modeldeck rollback` (or the next release) takes the lock over.",
        )
        done = sfn.Succeed(self, "Released")
        execution = {"execution.$": "$$.Execution.Name"}

        release_lock = self._task("ReleaseLock", "refused", extra=execution, retry_all=True)
        release_lock.add_catch(refused, errors=["States.ALL"], result_path="$.cleanup_error")
        release_lock.next(refused)

        rollback_on_error = self._task("RollBackAfterError", "failed", retry_all=True)
        rollback_on_alarm = self._task("RollBack", "rollback", retry_all=True)
        for task in (rollback_on_error, rollback_on_alarm):
            task.add_catch(superseded, errors=["ReleaseSuperseded"], result_path="$.error")
            task.add_catch(rollback_failed, errors=["States.ALL"], result_path="$.rollback_error")
            task.next(rolled_back)

        def guarded(task: tasks.LambdaInvoke) -> tasks.LambdaInvoke:
            task.add_catch(superseded, errors=["ReleaseSuperseded"], result_path="$.error")
            task.add_catch(rollback_on_error, errors=["States.ALL"], result_path="$.error")
            return task

        promote = guarded(self._task("Promote", "promote", retry_all=True)).next(done)

        gate = self._task("Gate", "gate", extra={**execution, "execution_arn.$": "$$.Execution.Id"})
        gate.add_catch(release_lock, errors=["States.ALL"], result_path="$.error")

        shift = guarded(self._task("ShiftTraffic", "shift"))
        # The bake is a loop of short waits, each followed by a look of the statistical gate (an always-valid
        # sequential test of the candidate against the champion), which may roll back before the bake ends;
        # the waits add up to the bake (shift sets `gate_wait` and `bake_left`).
        bake = sfn.Wait(self, "Bake", time=sfn.WaitTime.seconds_path("$.gate_wait"))
        look = guarded(self._task("SequentialCheck", "sequential_check"))
        # Metrics reach CloudWatch minutes late: the bake's last minutes are judged only after this.
        settle = sfn.Wait(self, "SettleMetrics", time=sfn.WaitTime.seconds_path("$.settle_seconds"))
        check = guarded(self._task("CheckAlarms", "check"))

        verdict = (
            sfn.Choice(self, "Healthy?")
            .when(sfn.Condition.boolean_equals("$.healthy", False), rollback_on_alarm)
            .when(sfn.Condition.boolean_equals("$.done", True), promote)
            .otherwise(shift)
        )
        worse = (
            sfn.Choice(self, "Worse?")
            .when(sfn.Condition.boolean_equals("$.worse", True), rollback_on_alarm)
            .when(sfn.Condition.number_greater_than("$.bake_left", 0), bake)
            .otherwise(settle)
        )
        shift.next(bake).next(look).next(worse)
        settle.next(check).next(verdict)

        shadow_start = guarded(self._task("StartShadow", "shadow"))
        shadow_bake = sfn.Wait(self, "ShadowBake", time=sfn.WaitTime.seconds_path("$.bake_seconds"))
        shadow_stop = guarded(self._task("StopShadow", "shadow", extra={"stop": True}, retry_all=True))
        shadow_start.next(shadow_bake).next(shadow_stop).next(sfn.Succeed(self, "ShadowComplete"))

        route = (
            sfn.Choice(self, "Strategy?")
            .when(sfn.Condition.boolean_equals("$.first_release", True), promote)
            .when(sfn.Condition.string_equals("$.strategy", "shadow"), shadow_start)
            .when(sfn.Condition.number_equals("$.steps", 0), promote)
            .otherwise(shift)
        )
        definition = gate.next(route)

        log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            tracing_enabled=True,
            timeout=timeout,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        topic.grant_publish(release_function)
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[release_function.function_arn])
        )

    def _task(
        self, id_: str, action: str, extra: dict[str, Any] | None = None, retry_all: bool = False
    ) -> tasks.LambdaInvoke:
        payload = sfn.TaskInput.from_object({"action": action, "event.$": "$", **(extra or {})})
        task = tasks.LambdaInvoke(
            self,
            id_,
            lambda_function=self.function,
            payload=payload,
            payload_response_only=True,
            retry_on_service_exceptions=False,
        )
        # Refusals and a lost lock are answers, not faults: never retried.
        task.add_retry(errors=["ReleaseRefused", "ReleaseSuperseded"], max_attempts=0)
        task.add_retry(
            errors=["States.ALL"] if retry_all else TRANSIENT,
            interval=Duration.seconds(2),
            backoff_rate=2.0,
            max_attempts=6 if retry_all else 3,
        )
        return task
