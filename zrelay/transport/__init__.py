"""SSH transport: connections, sessions and the remote host model.

Importing the package imports asyncssh through ``sshlib`` first, so that every later
``import asyncssh`` in zrelay (here and in ``zrelay.paths``) finds it already loaded.
"""

from zrelay.transport.sshlib import import_asyncssh

import_asyncssh()
