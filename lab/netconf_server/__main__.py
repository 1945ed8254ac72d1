"""``python -m lab.netconf_server``: see lab/netconf_server/server.py."""

import sys

from lab.netconf_server.server import main

sys.exit(main())
