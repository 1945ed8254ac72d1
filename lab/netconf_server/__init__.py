"""NETCONF test server: the real ``netconf`` package (SSH, 1.0/1.1 framing) serving a network
namespace's kernel IPv6 routes as ietf-routing data (real YANG, validated with yanglint) and as
reproduced Junos XML API replies.  See server.py, ietf.py, junos.py."""
