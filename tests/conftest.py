"""Shared fixtures. Keep this file minimal: fixtures live in their own modules and are imported here."""
import signal

from plugins import plugin_env  # noqa: F401  (an installed model in group fmmodel.models; see tests/plugins.py)

from s3_server import s3_bucket, s3_server  # noqa: F401  (a loopback S3 server; see tests/s3_server.py)

# pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored across exec: the commands
# the tests start would then never see the Ctrl-C that tests/test_interrupt.py sends. Give them the
# disposition a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
