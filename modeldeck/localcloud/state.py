"""State between commands: moto keeps state in memory, so each CLI command restores what the previous
ones left (bucket objects, published Lambda versions and aliases, alarms) from a state directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from modeldeck.localcloud.cloudwatch import ALARM_ARGUMENTS

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


def save_state(cloud: LocalCloud, state_dir: Path) -> None:
    """Persist what commands change: bucket objects, published Lambda versions and aliases, alarms."""
    s3 = cloud.client("s3")
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        root = state_dir / "s3" / bucket
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                path = root / obj["Key"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    lam = cloud.client("lambda")
    functions = {}
    for page in lam.get_paginator("list_functions").paginate():
        for fn in page["Functions"]:
            name = fn["FunctionName"]
            versions = [
                {"Version": v["Version"], "Environment": v.get("Environment", {}).get("Variables", {})}
                for v in lam.list_versions_by_function(FunctionName=name)["Versions"]
                if v["Version"] != "$LATEST"
            ]
            aliases = [
                {
                    "Name": a["Name"],
                    "FunctionVersion": a["FunctionVersion"],
                    "RoutingConfig": a.get("RoutingConfig") or {"AdditionalVersionWeights": {}},
                }
                for a in lam.list_aliases(FunctionName=name)["Aliases"]
            ]
            functions[name] = {"versions": versions, "aliases": aliases}
    alarms = []
    for page in cloud.client("cloudwatch").get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
        alarms.extend(page["MetricAlarms"])
    state_dir.mkdir(parents=True, exist_ok=True)
    if functions or not (state_dir / "cloud.json").exists():
        # A command that ran without the app deployed must not erase the deployed state.
        state = {"functions": functions, "alarms": alarms, "clock": cloud.clock.time()}
        (state_dir / "cloud.json").write_text(json.dumps(state, default=str))


def restore_state(cloud: LocalCloud, state_dir: Path) -> None:
    """Replay saved state on top of a fresh deployment (buckets, versions, aliases, alarm states)."""
    s3 = cloud.client("s3")
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    root = state_dir / "s3"
    if root.is_dir():
        for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if bucket_dir.name not in existing:
                s3.create_bucket(Bucket=bucket_dir.name)
            for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
                s3.put_object(
                    Bucket=bucket_dir.name, Key=path.relative_to(bucket_dir).as_posix(), Body=path.read_bytes()
                )
    saved = state_dir / "cloud.json"
    if not saved.is_file():
        return
    state = json.loads(saved.read_text())
    # Time never runs backwards between commands: what the previous ones stamped on the virtual clock (release
    # records, alarm history) stays in the past.
    cloud.clock.not_before(float(state.get("clock") or 0.0))
    lam = cloud.client("lambda")
    for name, fn in state["functions"].items():
        try:
            current = lam.get_function_configuration(FunctionName=name)
        except Exception:  # the function is no longer in the templates
            continue
        published = {v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]}
        base_env = current.get("Environment", {}).get("Variables", {})
        for version in fn["versions"]:
            if version["Version"] in published:
                continue
            lam.update_function_configuration(FunctionName=name, Environment={"Variables": version["Environment"]})
            lam.publish_version(FunctionName=name)
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": base_env})
        for alias in fn["aliases"]:
            try:
                lam.update_alias(FunctionName=name, **alias)
            except Exception:
                lam.create_alias(FunctionName=name, **alias)
    cw = cloud.client("cloudwatch")
    keys = ALARM_ARGUMENTS
    for alarm in state["alarms"]:
        cw.put_metric_alarm(**{k: v for k, v in alarm.items() if k in keys and v not in (None, [])})
        cw.set_alarm_state(
            AlarmName=alarm["AlarmName"],
            StateValue=alarm["StateValue"],
            StateReason=alarm.get("StateReason") or "restored",
        )
