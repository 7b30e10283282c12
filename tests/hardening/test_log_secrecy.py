"""Logs never hold the API key or a whole request payload (capture records go to the capture path only).

Requests with an API key and a recognisable payload go through the gateway and the handler in the local
cloud; then the handler's stdout lines (``cloud.lambdas.logs``), the gateway's access log and every Python
log record are searched for the key, the raw bodies and the payload's marker values.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading

import pytest

from modeldeck.capture import CAPTURE_LOGGER
from modeldeck.gateway import serve
from tests.fixtures.inference import MODEL, ROW, oip_inputs
from tests.hardening.conftest import API_KEY, LiveApi, record_figures

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No application metrics to publish")]

MARKER = 13.371337  # a mean_radius no real request carries
CATEGORY_MARKER = "zz-secret-category-42"


def test_no_log_line_holds_the_api_key_or_a_payload(
    live_api: LiveApi, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    access: list[str] = []
    server = serve(live_api.gateway, port=0, access_log=access.append)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cloud = live_api.cloud
    cloud.lambdas.logs.clear()
    bodies = [
        json.dumps({"instances": [{**ROW, "mean_radius": MARKER}] * 3}),
        json.dumps({"id": "secret-oip-id", "inputs": oip_inputs([{**ROW, "mean_radius": MARKER}])}),
        json.dumps({"instances": [{**ROW, "mean_area": CATEGORY_MARKER, "mean_radius": MARKER}]}),  # rejected: 400
        json.dumps({"instances": [{**ROW, "mean_radius": MARKER}]}) + " garbage",  # malformed: 400
    ]
    paths = [
        f"/v1/models/{MODEL}:predict",
        f"/v2/models/{MODEL}/infer",
        f"/v1/models/{MODEL}:predict",
        f"/v1/models/{MODEL}:predict",
    ]
    statuses = []
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(5):
                for path, body in zip(paths, bodies, strict=True):
                    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
                    conn.request(
                        "POST", path, body=body, headers={"x-api-key": API_KEY, "content-type": "application/json"}
                    )
                    response = conn.getresponse()
                    response.read()
                    statuses.append(response.status)
                    conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
                conn.request("GET", f"/v2/models/{MODEL}", headers={"x-api-key": "wrong-" + API_KEY})
                statuses.append(conn.getresponse().status)
                conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert statuses.count(200) == 10 and statuses.count(400) == 10 and statuses.count(403) == 5

    # What the functions printed: routed by the local cloud, or straight to this process's stdout
    handler_lines = [line for lines in cloud.lambdas.logs.values() for line in lines]
    handler_lines += [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    # Python log records at INFO (the default level); the capture logger's records are the capture path
    python_lines = [record.getMessage() for record in caplog.records if record.name != CAPTURE_LOGGER]
    capture_lines = [record.getMessage() for record in caplog.records if record.name == CAPTURE_LOGGER]
    other_lines = []
    for line in handler_lines + python_lines + access:
        try:
            kind = json.loads(line).get("kind")
        except (ValueError, AttributeError):
            kind = None
        (capture_lines if kind in ("capture", "feedback") else other_lines).append(line)
    everything = handler_lines + python_lines + capture_lines + access
    assert handler_lines and access  # the handler and the gateway did log

    # Then the key is nowhere, in no log
    assert not [line for line in everything if API_KEY in line]
    # And no raw body is in any log
    assert not [line for line in everything for body in bodies if body in line]
    # And the payload's values are in no operational log line: only capture records carry features
    assert not [line for line in other_lines if str(MARKER) in line]
    # And each captured request is one capture record, not also copied into an operational log line
    # (the same record may be seen twice: as the handler's stdout line and as the capture logger's record)
    captured = [json.loads(line) for line in capture_lines if str(MARKER) in line]
    # (OIP requests reuse their client's id, so a record is identified by its id and its microsecond timestamp)
    assert len({(record["id"], record["ts"]) for record in captured}) == 10  # one per successful request
    assert all(record.get("kind") == "capture" for record in captured)
    record_figures(
        "logs", {"requests": len(statuses), "log_lines_checked": len(everything), "api_key_hits": 0, "payload_hits": 0}
    )


def test_rejected_values_are_not_logged_beyond_a_short_excerpt(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 400's message may quote the offending value, but the handler's log keeps no more than the message
    cloud = live_api.cloud
    cloud.lambdas.logs.clear()
    long_value = "x" * 5000
    conn = http.client.HTTPConnection(live_api.host, live_api.port, timeout=10)
    body = json.dumps({"instances": [{**ROW, "mean_area": long_value}]})
    conn.request(
        "POST",
        f"/v1/models/{MODEL}:predict",
        body=body,
        headers={"x-api-key": API_KEY, "content-type": "application/json"},
    )
    assert conn.getresponse().status == 400
    conn.close()
    lines = [line for lines in cloud.lambdas.logs.values() for line in lines]
    lines += capsys.readouterr().out.splitlines()
    assert not [line for line in lines if long_value[:200] in line]
