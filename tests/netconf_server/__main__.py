"""``python -m tests.netconf_server``: see tests/netconf_server/server.py."""

import sys

from tests.netconf_server.server import main

sys.exit(main())
