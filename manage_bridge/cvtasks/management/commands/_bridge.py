"""What the two management commands share: option pass-through, the document, the exec."""
import sys

from django.core.management.base import BaseCommand, CommandError, handle_default_options

from ... import launcher, settings_document

LOG_LEVELS = ["debug", "info", "warning", "error", "critical", "fatal"]


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


class BridgeCommand(BaseCommand):
    """A command that execs a cvtasks binary with the project's settings document.

    Options it declares are checked by argparse (a wrong value is Django's usage error); any other
    option is passed to the binary as written, so every option of the binary works here too.
    """

    binary = None  # "run_celery_worker" / "run_celery_beat"

    def add_arguments(self, parser):
        parser.add_argument("-l", "--loglevel", default="info", type=str.lower,
                            choices=LOG_LEVELS, help="log level (default info)")
        parser.add_argument("--logfile", help="log to this file instead of stderr")
        parser.add_argument("--pidfile", help="write the process id to this file")

    def binary_args(self, options):
        """The binary's arguments for the declared options (subclasses add theirs)."""
        args = ["--loglevel", options["loglevel"]]
        for name in ("logfile", "pidfile"):
            if options.get(name):
                args += [f"--{name}", options[name]]
        return args

    def run_from_argv(self, argv):
        # BaseCommand.run_from_argv with parse_known_args: unknown options go to the binary,
        # while argparse still rejects bad values of the options declared here.
        self._called_from_command_line = True
        parser = self.create_parser(argv[0], argv[1])
        options, self._passthrough = parser.parse_known_args(argv[2:])
        cmd_options = vars(options)
        args = cmd_options.pop("args", ())
        handle_default_options(options)
        try:
            self.execute(*args, **cmd_options)
        except CommandError as e:
            if options.traceback:
                raise
            self.stderr.write(f"{e.__class__.__name__}: {e}")
            sys.exit(e.returncode)

    def handle(self, *args, **options):
        try:
            path = launcher.find_binary(self.binary)
            document = settings_document.build()
        except (launcher.BinaryNotFound, settings_document.SettingsError) as e:
            raise CommandError(str(e))
        passthrough = getattr(self, "_passthrough", [])
        launcher.exec_binary(path, self.binary_args(options) + list(passthrough), document)
