import json
import time

from django.core.management.base import BaseCommand, CommandError

from transferapp.jobs import checks
from transferapp.library import errors
from transferapp.models import TrainingRun
from transferapp.training import runs as training_runs

from ._operator import as_operator
from ._project_arg import add_project_arguments, owned_project


class Command(BaseCommand):
    help = "Start a training of a project (as its Train button does); with --wait, print the version's metrics as JSON."

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--preset", choices=["fast", "best"], default="best")
        parser.add_argument("--base", default="efficientnet_lite0")
        parser.add_argument("--wait", action="store_true", help="wait for a worker to finish the run")

    @as_operator
    def handle(self, *args, user, project, preset, base, wait, **options):
        try:
            run = training_runs.training_start(project=owned_project(user, project), base_model=base, preset=preset, config={})
        except errors.ServiceError as exc:
            raise CommandError(str(exc)) from None
        if not wait:
            self.stdout.write(json.dumps({"run": run.pk, "status": run.status}))
            return
        while not run.is_finished:
            time.sleep(2)
            run = checks.run_check(run=TrainingRun.objects.get(pk=run.pk))
        metrics = {k: run.metrics.get(k) for k in ("accuracy", "n_train", "n_val", "per_class", "strategy")}
        self.stdout.write(json.dumps({"run": run.pk, "version": run.version, "status": run.status,
                                      "error": run.error, "metrics": metrics}))
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"The training {run.status}: {run.error}")
