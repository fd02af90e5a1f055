"""Loopback fake servers for protocol tests (real sockets, scripted misbehaviour)."""
