"""The Celery app the workers run: ``dagster-celery worker start -A ingest_assets.celery_app``.

dagster-celery's own app (``-A dagster_celery.app``) takes its settings from a YAML file; this one
takes them from ``ingest_assets.executors``, where the executor that sends the steps takes them
too: the broker (``INGEST_CELERY_BROKER``), late acknowledgement and the visibility timeout after
which the step of a lost worker runs again elsewhere.
"""

import importlib

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from ingest_assets.executors import PRELOADED_MODULES, celery_app_args

# Imported once here, before the pool forks its processes, or each process pays seconds of
# imports on its first step. Modules only: building the definitions here would open DuckDB
# (it checks SQL at load), whose threads do not survive a fork (the steps then hang).
for module in PRELOADED_MODULES:
    importlib.import_module(module)

app = make_app(celery_app_args())
execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
