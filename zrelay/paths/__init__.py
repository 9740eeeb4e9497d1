"""Data paths: host to host (relay, direct), host to S3, S3 to host."""

import zrelay.transport  # noqa: F401  (asyncssh is imported the quick way before any path module imports it)
