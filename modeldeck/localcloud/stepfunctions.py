"""Step Functions on the virtual clock: moto's ASL engine executes the state machines; this module makes its
Wait states wait on the local cloud's clock, and tells the clock when an execution is doing work.

- A Wait state ("Wait workflow state": Seconds/SecondsPath) sleeps on the virtual clock, and an execution
  stopped meanwhile ends its wait, as moto's own wait does.
- A running execution holds the clock from StartExecution on, except while it waits in a Wait state or
  waits for a Lambda task (whose invocation holds the clock itself), so the clock jumps only when every
  execution is waiting.

- A Retrier's interval (IntervalSeconds, BackoffRate, MaxDelaySeconds: "Handling errors in Step Functions
  workflows") is waited on the virtual clock too, so an execution retrying a task lets the clock jump.
- A Wait state on a ``Timestamp`` (or ``TimestampPath``) waits until that time on the virtual clock ("Wait
  workflow state": "an absolute time to wait until").
- An execution's ``TimeoutSeconds`` ("State machine structure": the execution fails with
  States.Timeout, status TIMED_OUT) and a Task's ``TimeoutSeconds`` ("Task workflow state": the state fails
  with States.Timeout, which Retry and Catch see) are measured on the virtual clock.

Distributed Map (:func:`distributed_map`), what moto 5.2.5 lacks, by AWS's documents:
- "ItemReader": ``s3:listObjectsV2`` lists every page under the prefix, one item per object
  (``Etag, Key, LastModified, Size, StorageClass``).
- "ItemBatcher": MaxItemsPerBatch, MaxInputBytesPerBatch (at most 256 KiB) and BatchInput; each child
  execution gets ``{"Items": [...], "BatchInput": ...}``.
- MaxConcurrency bounds the child executions running at once (moto's worker pool); each child is an execution
  of its own (``$$.Execution.Id``, its own clock hold), run through the same Lambda runtime, as the state
  machine's role, on the virtual clock.
- "Tolerated failure threshold": ToleratedFailurePercentage / ToleratedFailureCount over items; beyond it the
  Map Run fails with States.ExceedToleratedFailureThreshold (after every child ended; AWS may stop sooner).
- "ResultWriter": ``{Prefix}/{MapRunId}/manifest.json`` with ``SUCCEEDED_0.json`` / ``FAILED_0.json``, each an
  array of child execution records (Input, Output or Error/Cause, Status, dates), also for a failed Map Run.
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

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    original_retrier = retrier_decl.RetrierDecl._eval_body
    retrying = threading.local()

    def retrier_body(retrier: Any, env: Any) -> None:
        retrying.env = env
        try:
            original_retrier(retrier, env)
        finally:
            retrying.env = None

    def retry_interval(seconds: float) -> None:
        # A Retrier's IntervalSeconds (with BackoffRate, MaxDelaySeconds) is waited on the virtual clock, with
        # the execution's hold suspended, like a Wait state ("Handling errors in Step Functions workflows").
        env = retrying.env
        clock.sleep(float(seconds), suspend=execution_key(env), interrupted=lambda: not env.is_running())

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
        stack.enter_context(mock.patch.object(retrier_decl.RetrierDecl, "_eval_body", retrier_body))
        stack.enter_context(mock.patch.object(retrier_decl, "time", SimpleNamespace(sleep=retry_interval)))
        stack.enter_context(mock.patch.object(Timestamp, "_get_wait_seconds", seconds_until))
        stack.enter_context(mock.patch.object(execute_state, "threading", timed_threading))
        stack.enter_context(mock.patch.object(program, "threading", timed_threading))
        stack.enter_context(mock.patch.object(lambda_eval_utils, "execute_lambda_function_integration", lambda_task))
        stack.enter_context(distributed_map(clock))
        yield


# Distributed Map ("Distributed Map state", "ItemReader", "ItemBatcher", "ResultWriter", "Tolerated failure
# threshold"): the fields moto 5.2.5 lacks. Its ASL parser refuses ItemBatcher and an integer
# ToleratedFailurePercentage, its listObjectsV2 reader cannot encode the listing's datetimes, its ResultWriter
# writes an empty manifest, and it never fails a Map Run on failed children. The parser is given the definition
# without those fields; they are kept on the Map's iteration component and carried out here.
_BATCHER_FIELDS = ("ItemBatcher", "ToleratedFailurePercentage", "ToleratedFailureCount")
_UNEMULATED = ("ToleratedFailurePercentagePath", "ToleratedFailureCountPath")
_FIELDS = "_modeldeck_distributed"
_CHILDREN = "_modeldeck_children"
# "ItemBatcher": MaxInputBytesPerBatch is at most 256 KiB (and a child's input is limited to 256 KiB).
MAX_BATCH_BYTES = 256 * 1024


class DistributedFields:
    """A distributed Map's ItemBatcher and tolerated-failure fields, as the definition declares them."""

    def __init__(self, state: str, fields: dict[str, Any]) -> None:
        self.state = state
        unsupported = [name for name in _UNEMULATED if name in fields]
        batcher = fields.get("ItemBatcher")
        if batcher is not None:
            unsupported += [f"ItemBatcher.{k}" for k in batcher if k.endswith("Path")]
        if unsupported:
            raise ValueError(f"Map state {state!r}: the local cloud does not emulate {', '.join(unsupported)}")
        self.batcher: dict[str, Any] | None = batcher
        self.tolerated_percentage = float(fields.get("ToleratedFailurePercentage", 0))
        self.tolerated_count = int(fields.get("ToleratedFailureCount", 0))
        self.result_writer: Any = None

    def batches(self, items: list[Any], env: Any) -> list[Any]:
        """ "ItemBatcher": consecutive items, each batch ``{"Items": [...], "BatchInput": ...}`` with at most
        MaxItemsPerBatch items and at most MaxInputBytesPerBatch bytes of JSON (256 KiB at most); an item
        too large to fit in a batch alone fails the state."""
        assert self.batcher is not None
        max_items = int(self.batcher.get("MaxItemsPerBatch", 0)) or len(items) or 1
        max_bytes = min(int(self.batcher.get("MaxInputBytesPerBatch", MAX_BATCH_BYTES)), MAX_BATCH_BYTES)
        batch_input = self.batcher.get("BatchInput")
        base: dict[str, Any] = {"Items": []}
        if batch_input is not None:
            base["BatchInput"] = _resolve_paths(batch_input, env)
        overhead = len(_json(base))
        out: list[Any] = []
        current: list[Any] = []
        size = overhead
        for item in items:
            item_size = len(_json(item)) + (1 if current else 0)
            if overhead + len(_json(item)) > max_bytes:
                _fail(env, "States.ItemReaderFailed", f"an item exceeds MaxInputBytesPerBatch ({max_bytes} bytes)")
            if current and (len(current) >= max_items or size + item_size > max_bytes):
                out.append({**base, "Items": current})
                current, size = [], overhead
                item_size = len(_json(item))
            current.append(item)
            size += item_size
        if current:
            out.append({**base, "Items": current})
        return out

    def exceeded(self, failed_items: int, total_items: int) -> bool:
        """ "Tolerated failure threshold": the Map Run fails when more items fail than the count or the
        percentage tolerates (both default to 0: any failure fails it)."""
        if failed_items == 0:
            return False
        over_count = failed_items > self.tolerated_count
        over_percentage = 100.0 * failed_items / max(total_items, 1) > self.tolerated_percentage
        return over_count and over_percentage


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _resolve_paths(template: Any, env: Any) -> Any:
    """A payload template's ``"key.$"`` fields resolved against the state's input (``$``) or the context
    object (``$$``), as in "Paths" / "Parameters" of the ASL specification."""
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$") and isinstance(value, str):
                if value.startswith("$$"):
                    out[key[:-2]] = extract_json(value[1:], env.states.context_object.context_object_data)
                else:
                    out[key[:-2]] = extract_json(value, env.states.get_input())
            else:
                out[key] = _resolve_paths(value, env)
        return out
    if isinstance(template, list):
        return [_resolve_paths(v, env) for v in template]
    return template


def _fail(env: Any, error: str, cause: str) -> None:
    from moto.stepfunctions.parser.api import EvaluationFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    raise FailureEventException(
        FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=StatesErrorNameType[error.replace(".", "")]),
            event_type=HistoryEventType.EvaluationFailed,
            event_details=EventDetails(  # type: ignore[typeddict-item]  # moto's TypedDict is total
                evaluationFailedEventDetails=EvaluationFailedEventDetails(error=error, cause=cause)
            ),
        )
    )


def _split_distributed(states: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    """Pop the fields moto cannot parse from every distributed Map state (recursively); by state path."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, state in states.items():
        if not isinstance(state, dict) or state.get("Type") != "Map":
            continue
        processor = state.get("ItemProcessor") or state.get("Iterator") or {}
        if (processor.get("ProcessorConfig") or {}).get("Mode") == "DISTRIBUTED":
            popped = {k: state.pop(k) for k in (*_BATCHER_FIELDS, *_UNEMULATED) if k in state}
            found[(*path, name)] = popped
        found.update(_split_distributed(processor.get("States") or {}, (*path, name)))
    return found


def _attach(states: Any, fields: dict[tuple[str, ...], dict[str, Any]], path: tuple[str, ...] = ()) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap

    for name, state in states.states.items():
        if not isinstance(state, StateMap):
            continue
        component = state.iteration_component
        if (*path, name) in fields:
            declared = DistributedFields(name, fields[(*path, name)])
            if declared.batcher is not None and state.item_selector is not None:
                raise ValueError(f"Map state {name!r}: the local cloud does not emulate ItemSelector with ItemBatcher")
            declared.result_writer = state.result_writer
            setattr(component, _FIELDS, declared)
        _attach(component._states, fields, (*path, name))


def _list_objects_items(s3: Any, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """ "ItemReader" with ``s3:listObjectsV2``: every object under the prefix (all pages), each item
    ``{Etag, Key, LastModified (epoch seconds), Size, StorageClass}`` as in the document's example."""
    items: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(**parameters):
        for obj in page.get("Contents", []):
            items.append(
                {
                    "Etag": obj["ETag"],
                    "Key": obj["Key"],
                    "LastModified": int(obj["LastModified"].timestamp()),
                    "Size": obj["Size"],
                    "StorageClass": obj.get("StorageClass", "STANDARD"),
                }
            )
    return items


def _child_arn(record: Any, name: str) -> tuple[str, str]:
    """A child execution's ARN (``execution:{machine}/{map run}:{name}``) and its state machine's."""
    prefix, rest = record.map_run_arn.split(":mapRun:", 1)
    map_run = rest.rsplit(":", 1)[0]
    return f"{prefix}:execution:{map_run}:{name}", f"{prefix}:stateMachine:{map_run}"


def _result_record(
    record: Any, name: str, status: str, job: Any, started: str, stopped: str, output: Any, error: Any
) -> dict[str, Any]:
    import json

    arn, machine = _child_arn(record, name)
    out: dict[str, Any] = {
        "ExecutionArn": arn,
        "Input": json.dumps(job.job_input),
        "InputDetails": {"Included": True},
        "Name": name,
        "RedriveCount": 0,
        "RedriveStatus": "NOT_REDRIVABLE",
        "StartDate": started,
        "StateMachineArn": machine,
        "Status": status,
        "StopDate": stopped,
    }
    if status == "SUCCEEDED":
        out.update(Output=json.dumps(output), OutputDetails={"Included": True})
    else:
        out.update(Error=(error or {}).get("error", "States.Runtime"), Cause=(error or {}).get("cause", ""))
    return out


@contextmanager
def distributed_map(clock: VirtualClock) -> Iterator[None]:
    """Patch moto's Distributed Map with what AWS does and moto lacks (see the module's Distributed Map notes)."""
    import json
    from unittest import mock

    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval import (
        resource_eval_s3 as reader_s3,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor import (
        distributed_item_processor_worker as workers,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval import (
        resource_eval_s3 as writer_s3,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.result_writer_decl import (
        ResultWriter,
    )
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramError
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    original_parse = AmazonStateLanguageParser.parse
    original_map_run = DistributedIterationComponent._map_run
    original_eval_job = workers.DistributedItemProcessorWorker._eval_job
    original_worker_eval = workers.DistributedItemProcessorWorker.eval

    def parse(definition: str) -> Any:
        try:
            document = json.loads(definition)
        except ValueError:
            return original_parse(definition)
        fields = _split_distributed(document.get("States") or {}) if isinstance(document, dict) else {}
        if not fields:
            return original_parse(definition)
        program, tree = original_parse(json.dumps(document))
        _attach(program.states, fields)  # type: ignore[attr-defined]  # a Program
        return program, tree

    def list_objects_v2(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
        s3 = reader_s3.ResourceEvalS3._get_s3_client(resource_runtime_part, state_credentials)
        env.stack.append(_list_objects_items(s3, env.stack.pop()))

    def eval_job(worker: Any, env: Any, job: Any) -> None:
        # A child is an execution of its own ($$.Execution.Id is its ARN), holding the clock under its own key
        # while it works: its Wait and Lambda states suspend that key, not the parent's or a sibling's.
        import uuid

        record = worker._map_run_record
        name = str(uuid.uuid4())
        arn, _ = _child_arn(record, name)
        context = env.states.context_object.context_object_data
        context["Execution"] = {**context["Execution"], "Id": arn, "Name": name}
        key, worker_key = ("execution", arn), ("map-worker", id(worker))
        started = clock.now().isoformat()
        clock.acquire(key)
        clock.release(worker_key)
        try:
            original_eval_job(worker, env, job)
        finally:
            clock.acquire(worker_key)
            clock.release(key)
        state = env.program_state()
        failed = isinstance(state, ProgramError) or job.job_output is None
        error = dict(state.error or {}) if isinstance(state, ProgramError) else None
        children = getattr(record, _CHILDREN, None)
        if children is not None:
            status = "FAILED" if failed else "SUCCEEDED"
            result = _result_record(record, name, status, job, started, clock.now().isoformat(), job.job_output, error)
            children.append((job.job_index, result, len(job.job_input.get("Items", [])) if _batched(job) else 1))

    def worker_eval(worker: Any) -> None:
        # A worker holds the clock between its children (from before its thread starts, through the launch
        # hold), so the clock cannot jump while MaxConcurrency workers start or move to their next child.
        key = ("map-worker", id(worker))
        clock.acquire(key)
        launch = getattr(worker._map_run_record, _LAUNCH, None)
        if launch is not None:
            launch.started()
        try:
            original_worker_eval(worker)
        finally:
            clock.release(key)

    def map_run(component: Any, env: Any, eval_input: Any) -> None:
        declared: DistributedFields | None = getattr(component, _FIELDS, None)
        record = eval_input.map_run_record
        setattr(record, _CHILDREN, [])
        items = env.stack.pop()
        if declared is not None and declared.batcher is not None:
            items = declared.batches(items, env)
        env.stack.append(items)
        if items:
            # moto launches MaxConcurrency workers (one per item when it is 0, AWS's "no limit").
            launch = _Launch(clock, len(items) if record.max_concurrency == 0 else record.max_concurrency)
            setattr(record, _LAUNCH, launch)
            try:
                # The parent waits for its children, which hold the clock themselves while they work.
                with clock.suspended(execution_key(env)):
                    original_map_run(component, env, eval_input)
            finally:
                launch.close()
        else:
            env.stack.append([])
        children = getattr(record, _CHILDREN)
        failed = sum(n for _, r, n in children if r["Status"] != "SUCCEEDED")
        total = sum(n for _, _, n in children)
        if declared is not None and declared.exceeded(failed, total):
            if declared.result_writer is not None:
                declared.result_writer.eval(env)  # AWS exports the results of a failed Map Run too
                env.stack.pop()
            _fail(
                env,
                "States.ExceedToleratedFailureThreshold",
                f"The specified tolerated failure threshold was exceeded: {failed} of {total} items failed",
            )

    def put_results(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
        """ "ResultWriter": ``{Prefix}/{MapRunId}/manifest.json`` and one ``SUCCEEDED_0.json`` /
        ``FAILED_0.json`` per status, each a JSON array of the child executions' records."""
        parameters = env.stack.pop()
        env.stack.pop()  # the Map's own output is replaced by the ResultWriter's details
        s3 = writer_s3.ResourceEvalS3._get_s3_client(resource_runtime_part, state_credentials)
        record = env.map_run_record_pool_manager.get_all().pop()
        run_id = record.map_run_arn.split(":")[-1]
        prefix = parameters.get("Prefix", "")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        children = sorted(getattr(record, _CHILDREN, []), key=lambda c: c[0])
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for status in ("SUCCEEDED", "FAILED"):
            rows = [r for _, r, _ in children if (r["Status"] == "SUCCEEDED") == (status == "SUCCEEDED")]
            if rows:
                key = f"{prefix}{run_id}/{status}_0.json"
                body = json.dumps(rows).encode()
                s3.put_object(Bucket=parameters["Bucket"], Key=key, Body=body)
                files[status].append({"Key": key, "Size": len(body)})
        manifest = {"DestinationBucket": parameters["Bucket"], "MapRunArn": record.map_run_arn, "ResultFiles": files}
        key = f"{prefix}{run_id}/manifest.json"
        s3.put_object(Bucket=parameters["Bucket"], Key=key, Body=json.dumps(manifest).encode())
        env.stack.append(
            {"MapRunArn": record.map_run_arn, "ResultWriterDetails": {"Bucket": parameters["Bucket"], "Key": key}}
        )

    def write_results(writer: Any, env: Any) -> None:
        # AWS resolves the ResultWriter's Parameters against the Map state's input; moto's paths read the top
        # of its stack, which holds the Map's output here.
        env.stack.append(env.states.get_input())
        writer.parargs.eval(env=env)
        parameters = env.stack.pop()
        env.stack.pop()
        env.stack.append(parameters)
        writer.resource_eval.eval_resource(env=env)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(ResultWriter, "_eval_body", write_results))
        stack.enter_context(mock.patch.object(AmazonStateLanguageParser, "parse", staticmethod(parse)))
        stack.enter_context(
            mock.patch.object(reader_s3.ResourceEvalS3, "_handle_list_objects_v2", staticmethod(list_objects_v2))
        )
        stack.enter_context(
            mock.patch.object(writer_s3.ResourceEvalS3, "_handle_put_object", staticmethod(put_results))
        )
        stack.enter_context(mock.patch.object(DistributedIterationComponent, "_map_run", map_run))
        stack.enter_context(mock.patch.object(workers.DistributedItemProcessorWorker, "_eval_job", eval_job))
        stack.enter_context(mock.patch.object(workers.DistributedItemProcessorWorker, "eval", worker_eval))
        yield


_LAUNCH = "_modeldeck_launch"


class _Launch:
    """Holds the clock from a Map Run's start until each of its workers holds it on its own thread."""

    def __init__(self, clock: VirtualClock, workers: int) -> None:
        self.clock, self.pending = clock, workers
        self._key: Hashable | None = ("map-launch", id(self))
        self._lock = threading.Lock()
        clock.acquire(self._key)

    def started(self) -> None:
        with self._lock:
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.close()

    def close(self) -> None:
        with self._lock:
            key, self._key = self._key, None
        if key is not None:
            self.clock.release(key)


def _batched(job: Any) -> bool:
    return isinstance(job.job_input, dict) and isinstance(job.job_input.get("Items"), list)
