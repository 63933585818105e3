"""Alerts: failed runs and failed checks POSTed as JSON to ``INGEST_ALERT_WEBHOOK_URL``.

Without the variable, alerts are only logged. The webhook URL may carry a token, so it is
never logged; a failed POST is logged with its status only.
"""


import os
from typing import Any

import dagster as dg
import httpx

import ingest_assets.connectors.http  # noqa: F401 - quiets httpx's URL logging (tokens in queries)

WEBHOOK_ENV = "INGEST_ALERT_WEBHOOK_URL"


def send_alert(payload: dict[str, Any], log: Any) -> bool:
    """POST the payload if a webhook is configured; returns whether it was delivered."""
    url = os.environ.get(WEBHOOK_ENV)
    log.warning(f"alert: {payload.get('kind')}: {payload.get('summary')}")
    if not url:
        return False
    try:
        response = httpx.post(url, json=payload, timeout=10)
    except httpx.HTTPError as exc:
        log.error(f"alert webhook unreachable ({type(exc).__name__})")
        return False
    if response.status_code >= 400:
        log.error(f"alert webhook answered HTTP {response.status_code}")
        return False
    return True


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    send_alert(
        {
            "kind": "run_failure",
            "summary": f"run {run.run_id} of {run.job_name} failed",
            "run_id": run.run_id,
            "job": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "error": context.failure_event.message,
        },
        context.log,
    )


@dg.sensor(name="alert_on_check_failure", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SkipReason | None:
    """Watch the event log for failed asset check evaluations since the last tick."""
    cursor = int(context.cursor) if context.cursor else None
    # No fetch_* API covers check evaluations yet; the event log storage's query is the stable one.
    records = context.instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor),
        limit=200,
        ascending=True,
    )
    sent = 0
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            sent += 1
            send_alert(
                {
                    "kind": "check_failure",
                    "summary": f"check {evaluation.check_name} failed on {evaluation.asset_key.to_user_string()}",
                    "asset": evaluation.asset_key.to_user_string(),
                    "check": evaluation.check_name,
                    "partition": evaluation.partition,
                    "severity": evaluation.severity.value,
                    "run_id": record.event_log_entry.run_id,
                    "metadata": {k: str(getattr(v, "value", v)) for k, v in evaluation.metadata.items()},
                },
                context.log,
            )
        context.update_cursor(str(record.storage_id))
    return None if sent or records else dg.SkipReason("no new check evaluations")
