"""Route sync: read the core router's IPv6 table (SNMP, NETCONF), diff it, apply it."""
