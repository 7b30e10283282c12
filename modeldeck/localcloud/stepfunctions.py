"""Step Functions on the virtual clock: moto's ASL engine executes the state machines; this module makes its
Wait states wait on the local cloud's clock, and tells the clock when an execution is doing work.

- A Wait state ("Wait workflow state": Seconds/SecondsPath) sleeps on the virtual clock, and an execution
  stopped meanwhile ends its wait, as moto's own wait does.
- A running execution holds the clock from StartExecution on, except while it waits in a Wait state or
  waits for a Lambda task (whose invocation holds the clock itself), so the clock jumps only when every
  execution is waiting.

- A Wait state on a ``Timestamp`` (or ``TimestampPath``) waits until that time on the virtual clock ("Wait
  workflow state": "an absolute time to wait until").
- An execution's ``TimeoutSeconds`` ("State machine structure": the execution fails with
  States.Timeout, status TIMED_OUT) and a Task's ``TimeoutSeconds`` ("Task workflow state": the state fails
  with States.Timeout, which Retry and Catch see) are measured on the virtual clock.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

from modeldeck.localcloud.clock import VirtualClock
from modeldeck.localcloud.iam import Enforcer, acting_as, current_principal


class _ClockEvent(threading.Event):
    """``threading.Event`` for moto's Task timeouts: a bounded ``wait`` passes on the virtual clock.

    Created before the task's thread starts; it holds the clock until ``wait`` has set its deadline, so the
    clock cannot jump past the deadline while the task starts."""

    clock: VirtualClock

    def __init__(self) -> None:
        super().__init__()
        self._key = ("task-timeout", id(self))
        self.clock.acquire(self._key)

    def set(self) -> None:
        super().set()
        _wake_sleepers(self.clock)

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None or timeout >= _NO_TIMEOUT:
            self.clock.release(self._key)
            return super().wait(timeout)  # no TimeoutSeconds: not a timer
        try:
            self.clock.sleep(float(timeout), suspend=self._key, interrupted=self.is_set)
            return self.is_set()
        finally:
            self.clock.release(self._key)


class _ClockThread(threading.Thread):
    """``threading.Thread`` for moto's execution timeout: ``join(timeout)`` waits on the virtual clock.

    It holds the clock from ``start`` until ``join`` has set the deadline, as ``_ClockEvent`` does."""

    clock: VirtualClock

    def start(self) -> None:
        self._key = ("execution-timeout", id(self))
        self._timed_out = False
        self.clock.acquire(self._key)
        super().start()

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self._timed_out:
                self.clock.release(self._key)
            _wake_sleepers(self.clock)

    def join(self, timeout: float | None = None) -> None:
        self._timed_out = False
        if timeout is not None:
            self.clock.sleep(float(timeout), suspend=self._key, interrupted=lambda: not self.is_alive())
            if self.is_alive():
                # Timed out: the caller sees the thread still alive, as after Thread.join(timeout), and stops the
                # execution; the clock stays held until the thread has ended (no jump past the stop meanwhile).
                self._timed_out = True
                if self.is_alive():
                    return
        self.clock.release(self._key)
        super().join()


# moto's TimeoutSeconds default for a Task without one (ASL: 99999999).
_NO_TIMEOUT = 99999999


def _wake_sleepers(clock: VirtualClock) -> None:
    # A no-op hold notifies the clock's sleepers, so a timeout watcher sees its work end at once.
    clock.acquire(_wake_sleepers)
    clock.release(_wake_sleepers)


def execution_key(env: Any) -> Hashable:
    """The clock hold of the execution an ASL environment (or one of its frames) belongs to."""
    return ("execution", env.states.context_object.context_object_data["Execution"]["Id"])


@contextmanager
def on_the_clock(clock: VirtualClock, iam: Enforcer | None = None) -> Iterator[None]:
    """Patch moto's Step Functions engine, while the local cloud runs, to follow ``clock``; with ``iam``, an
    execution's integrations (Lambda tasks, SDK calls) run as the state machine's role, as on AWS."""
    from unittest import mock

    from moto.stepfunctions.parser.asl.component.program import program
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp
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

    def seconds_until(function: Any, env: Any) -> float:
        # moto subtracts the host's local time; the wait lasts until the timestamp on the cloud's clock.
        function.string.eval(env=env)
        text = env.stack.pop()
        at = Timestamp._from_timestamp_string(timestamp=text)
        if at is None:
            from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
                FailureEventException,
            )

            raise FailureEventException(function._create_failure_event(env, text))
        return (at - clock.now().replace(tzinfo=None)).total_seconds()

    event_class = type("ClockEvent", (_ClockEvent,), {"clock": clock})
    thread_class = type("ClockThread", (_ClockThread,), {"clock": clock})
    timed_threading = SimpleNamespace(Event=event_class, Thread=thread_class)

    def lambda_task(env: Any, **kwargs: Any) -> Any:
        with clock.suspended(execution_key(env)):
            return original_lambda(env=env, **kwargs)

    import threading as real_threading

    from moto.stepfunctions.parser.asl.component.state.exec import execute_state as task_threads
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import inline_iteration_component
    from moto.stepfunctions.parser.asl.component.state.exec.state_parallel import branch_worker

    class RoleThread(real_threading.Thread):
        """A thread of an execution (a task's timeout thread, a Map iteration, a Parallel branch): its
        integrations act as the state machine's role, like the execution's own thread."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.principal = current_principal()

        def run(self) -> None:
            with acting_as(self.principal):
                super().run()

    role_threading = SimpleNamespace(**{**vars(real_threading), "Thread": RoleThread})
    from moto.stepfunctions.parser.asl.component.program.program import Program

    original_body = Program._eval_body

    def eval_body(program_: Any, env: Any) -> None:
        # The states run on a thread of the program's own: as the state machine's role.
        machine = env.states.context_object.context_object_data["StateMachine"]["Id"]
        with acting_as(iam.state_machine_principal(machine) if iam else None):
            original_body(program_, env)

    with ExitStack() as stack:
        if iam is not None:
            stack.enter_context(mock.patch.object(Program, "_eval_body", eval_body))
            stack.enter_context(mock.patch.object(task_threads, "Thread", RoleThread))
            stack.enter_context(mock.patch.object(inline_iteration_component, "threading", role_threading))
            stack.enter_context(mock.patch.object(branch_worker, "threading", role_threading))
        stack.enter_context(mock.patch.object(ExecutionWorker, "start", start))
        stack.enter_context(mock.patch.object(ExecutionWorker, "_execution_logic", execution_logic))
        stack.enter_context(mock.patch.object(WaitFunction, "_wait_interval", wait_interval))
        stack.enter_context(mock.patch.object(Timestamp, "_get_wait_seconds", seconds_until))
        stack.enter_context(mock.patch.object(execute_state, "threading", timed_threading))
        stack.enter_context(mock.patch.object(program, "threading", timed_threading))
        stack.enter_context(mock.patch.object(lambda_eval_utils, "execute_lambda_function_integration", lambda_task))
        yield
