"""Is an S3 target's endpoint URL (and region) one botocore will take?

Why here, in the pure core: the inventory loader asks when it reads the file, so
``zrelay inventory validate`` refuses at file:line:column what an S3 command would
fail on; zrelay/s3/store.py asks the same function before it makes a client.
botocore's own checks (``botocore.utils.is_valid_endpoint_url`` when a client is
made, the S3 endpoint rules' ``parseURL`` and ``validate_region_name`` when a request
is) end in messages such as "EndpointResolutionError: Custom endpoint ... was not a
valid URI". tests/unit/test_inventory_values.py hands the same URLs to botocore to
keep the two in step. Stricter than botocore on purpose: no credentials in the URL
(it is printed in messages), no fragment, no whitespace.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

#: botocore.utils.is_valid_endpoint_url: a host name of dot-separated labels (letters,
#: digits, '-', not at either end of a label), at most 255 characters.
_HOST = re.compile(r"((?!-)[A-Z\d-]{1,63}(?<!-)\.)*((?!-)[A-Z\d-]{1,63}(?<!-))", re.IGNORECASE)
#: botocore.utils.validate_region_name: one host label that is not all digits.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")


def _ipv6(host: str) -> bool:
    """An IPv6 address (with an optional zone, ``fe80::1%eth0``), as written in [brackets]."""
    address, _, zone = host.partition("%")
    if "%" in host and not zone:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def s3_endpoint_problem(url: str) -> str | None:
    """Why botocore would refuse ``url`` as an S3 endpoint, in one line; None if it is fine."""
    if any(c.isspace() for c in url):
        return f"{url!r} contains whitespace"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # urllib's own refusals: a bad [IPv6] host, a bad netloc
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an http:// or https:// URL"
    if parts.query:
        return f"{url!r} has a query ('?...'); an endpoint is scheme://host[:port][/path]"
    if parts.fragment or "#" in url:
        return f"{url!r} has a fragment ('#...'); an endpoint is scheme://host[:port][/path]"
    if "@" in parts.netloc:
        # not repeated: it may hold a password
        return ("the URL has a user name or password in it; credentials come from the "
                "environment, ~/.aws or the target's 'profile', never from the URL")
    try:
        port = parts.port
    except ValueError:
        written = parts.netloc.rpartition("]")[2].rpartition(":")[2]
        return f"{url!r}: port {written!r} is not a number from 0 to 65535"
    host = parts.hostname or ""
    if not host:
        return f"{url!r} has no host name"
    if "[" in parts.netloc:
        if not _ipv6(host):
            return f"{url!r}: {host!r} in [brackets] is not an IPv6 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(host) > 255 or not _HOST.fullmatch(name):
        return (f"{url!r}: {host!r} is not a host name (letters, digits and '-' in "
                "dot-separated labels) or an IP address")
    return None


def s3_region_problem(region: str) -> str | None:
    """Why botocore would refuse ``region`` (``InvalidRegionError``); None if it is fine."""
    if not _REGION.fullmatch(region):
        return (f"{region!r} is not a region name such as 'us-east-1' (letters, digits and "
                "'-', not all digits, at most 63)")
    return None
