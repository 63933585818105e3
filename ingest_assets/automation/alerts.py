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


def failed_check_alerts(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    """One alert per failed asset check evaluation of a run (storage-agnostic: the run's logs)."""
    alerts = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        asset = evaluation.asset_key.to_user_string()
        alerts.append(
            {
                "kind": "check_failure",
                "summary": f"check {evaluation.check_name} failed on {asset}",
                "asset": asset,
                "check": evaluation.check_name,
                "partition": evaluation.partition,
                "severity": evaluation.severity.value,
                "run_id": run_id,
                "metadata": {
                    k: str(getattr(v, "value", v)) for k, v in evaluation.metadata.items()
                },
            }
        )
    return alerts


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    """A failed run, and the checks that failed in it (a blocking check stops a run)."""
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
    for alert in failed_check_alerts(context.instance, run.run_id):
        send_alert(alert, context.log)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="alert_on_check_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def alert_on_check_failure(context: dg.RunStatusSensorContext) -> None:
    """Checks that failed in a run that succeeded (non-blocking checks: WARN or ERROR)."""
    for alert in failed_check_alerts(context.instance, context.dagster_run.run_id):
        send_alert(alert, context.log)
