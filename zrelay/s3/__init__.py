"""Offsite copies in S3-compatible storage: one object per ``zfs send``, a JSON manifest beside it.

Pure parts (no I/O): ``sizing`` (part sizes, sizes as text), ``options`` (per
target settings), ``manifest`` (manifest schema and the bucket's key layout),
``chains`` (chains of sends, push planning, pruning rules, restore paths).
I/O parts: ``store`` (boto3 client and error mapping), ``transfer``
(multipart upload with bounded memory, parallel ranged reads). See
docs/s3-layout.md for the layout and the terms.
"""
