"""Shared fixtures. Keep this file minimal: fixtures live in their own modules and are imported here."""
from plugins import plugin_env  # noqa: F401  (an installed model in group fmmodel.models; see tests/plugins.py)

from s3_server import s3_bucket, s3_server  # noqa: F401  (a loopback S3 server; see tests/s3_server.py)
