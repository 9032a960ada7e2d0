"""python manage.py run_celery_worker --worker-type pdf --concurrency 2 [--loglevel info] ..."""
from ... import conf
from ._bridge import BridgeCommand, positive_int


class Command(BridgeCommand):
    help = ("Run the C++ Celery worker (cvtasks) on this project's settings. Options not listed "
            "here are passed to run_celery_worker (see run_celery_worker --help).")
    binary = "run_celery_worker"

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--worker-type", default="all", choices=conf.WORKER_TYPES,
                            help="the queue(s) to consume: one module's queue, or all")
        parser.add_argument("-c", "--concurrency", type=positive_int,
                            help="pool threads (default: CELERY_WORKER_CONCURRENCY or CPUs)")
        parser.add_argument("-Q", "--queues", help="comma-separated queues (wins over --worker-type)")
        parser.add_argument("-n", "--hostname", help="node name (default celery@%%h)")

    def binary_args(self, options):
        args = super().binary_args(options) + ["--worker-type", options["worker_type"]]
        if options.get("concurrency") is not None:
            args += ["--concurrency", str(options["concurrency"])]
        for name in ("queues", "hostname"):
            if options.get(name):
                args += [f"--{name}", options[name]]
        return args
