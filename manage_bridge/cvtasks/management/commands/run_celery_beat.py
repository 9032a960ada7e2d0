"""python manage.py run_celery_beat [--loglevel info] [-s celerybeat-schedule.db] ..."""
from ._bridge import BridgeCommand


class Command(BridgeCommand):
    help = ("Run the C++ Celery beat (cvtasks) on this project's settings. Options not listed "
            "here are passed to run_celery_beat (see run_celery_beat --help).")
    binary = "run_celery_beat"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("-s", "--schedule", help="state file (default celerybeat-schedule.db)")
        parser.add_argument("--max-interval", type=float,
                            help="longest sleep between schedule checks, seconds")

    def binary_args(self, options):
        args = super().binary_args(options)
        if options.get("schedule"):
            args += ["--schedule", options["schedule"]]
        if options.get("max_interval") is not None:
            args += ["--max-interval", str(options["max_interval"])]
        return args
