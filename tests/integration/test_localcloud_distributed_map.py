"""The local cloud's Distributed Map on its own ASL: MaxConcurrency bounds the child executions running at once,
on the virtual clock ("Distributed Map state": MaxConcurrency; "ItemBatcher")."""

from __future__ import annotations

import json
import time
from typing import Any

from modeldeck.localcloud import local_cloud


def _machine(concurrency: int) -> dict[str, Any]:
    child = {"Type": "Wait", "Seconds": 60, "End": True}
    return {
        "StartAt": "Fan",
        "States": {
            "Fan": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:listObjectsV2",
                    "Parameters": {"Bucket.$": "$.bucket", "Prefix": "in/"},
                },
                "ItemBatcher": {"MaxItemsPerBatch": 2},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Work",
                    "States": {"Work": child},
                },
                "MaxConcurrency": concurrency,
                "End": True,
            }
        },
    }


def test_max_concurrency_bounds_the_children_running_at_once_in_virtual_time() -> None:
    # Given 8 objects, batched 2 per child (4 children), each child working 60 virtual seconds
    with local_cloud() as cloud:
        s3, sfn = cloud.client("s3"), cloud.client("stepfunctions")
        for i in range(8):
            s3.put_object(Bucket=cloud.bucket, Key=f"in/{i}.csv", Body=b"x\n1\n")
        took = {}
        for concurrency in (1, 2, 4):
            arn = sfn.create_state_machine(
                name=f"fan-{concurrency}",
                definition=json.dumps(_machine(concurrency)),
                roleArn="arn:aws:iam::123456789012:role/local",
            )["stateMachineArn"]
            started = cloud.clock.now()
            execution = sfn.start_execution(
                stateMachineArn=arn, name=f"run-{concurrency}", input=json.dumps({"bucket": cloud.bucket})
            )["executionArn"]
            while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
                time.sleep(0.02)
            assert sfn.describe_execution(executionArn=execution)["status"] == "SUCCEEDED"
            took[concurrency] = (cloud.clock.now() - started).total_seconds()
    # Then the run takes one minute per wave of MaxConcurrency children: 4, 2 and 1 waves
    assert [round(took[c] / 60) for c in (1, 2, 4)] == [4, 2, 1], took
