"""Operator packet tools: decode, explain, send, demo (route files, pcap reading, the sender)."""
