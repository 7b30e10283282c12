"""Step Functions on the virtual clock: moto's ASL engine executes the state machines; this module makes its
Wait states wait on the local cloud's clock, and tells the clock when an execution is doing work.

- A Wait state ("Wait workflow state": Seconds/SecondsPath) sleeps on the virtual clock, and an execution
  stopped meanwhile ends its wait, as moto's own wait does.
- A running execution holds the clock from StartExecution on, except while it waits in a Wait state or
  waits for a Lambda task (whose invocation holds the clock itself), so the clock jumps only when every
  execution is waiting.

Not emulated on the clock: an execution's TimeoutSeconds and a Task's TimeoutSeconds (moto measures them
in wall time), and Wait states on a Timestamp.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from modeldeck.localcloud.clock import VirtualClock
from modeldeck.localcloud.iam import Enforcer, acting_as


def execution_key(env: Any) -> Hashable:
    """The clock hold of the execution an ASL environment (or one of its frames) belongs to."""
    return ("execution", env.states.context_object.context_object_data["Execution"]["Id"])


@contextmanager
def on_the_clock(clock: VirtualClock, iam: Enforcer | None = None) -> Iterator[None]:
    """Patch moto's Step Functions engine, while the local cloud runs, to follow ``clock``; with ``iam``, an
    execution's integrations (Lambda tasks, SDK calls) run as the state machine's role, as on AWS."""
    from unittest import mock

    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    original_start = ExecutionWorker.start
    original_logic = ExecutionWorker._execution_logic
    original_lambda = lambda_eval_utils.execute_lambda_function_integration

    def key_of(worker: Any) -> Hashable:
        return ("execution", worker._evaluation_details.execution_details.arn)

    def start(worker: Any) -> None:
        # Held from the request on, so the clock cannot jump before the execution's thread runs.
        clock.acquire(key_of(worker))
        try:
            original_start(worker)
        except BaseException:
            clock.release(key_of(worker))
            raise

    def execution_logic(worker: Any) -> None:
        role = iam.state_machine_principal(worker._evaluation_details.state_machine_details.arn) if iam else None
        try:
            with acting_as(role):
                original_logic(worker)
        finally:
            clock.release(key_of(worker))

    def wait_interval(_function: Any, env: Any, wait_seconds: int) -> None:
        clock.sleep(float(wait_seconds), suspend=execution_key(env), interrupted=lambda: not env.is_running())

    def lambda_task(env: Any, **kwargs: Any) -> Any:
        with clock.suspended(execution_key(env)):
            return original_lambda(env=env, **kwargs)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(ExecutionWorker, "start", start))
        stack.enter_context(mock.patch.object(ExecutionWorker, "_execution_logic", execution_logic))
        stack.enter_context(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
        stack.enter_context(mock.patch.object(lambda_eval_utils, "execute_lambda_function_integration", lambda_task))
        yield
