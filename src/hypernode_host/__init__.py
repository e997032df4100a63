"""Hypernode Host: the node agent of the Hypernode GPU compute network."""

__version__ = "0.1.0"
AGENT_VERSION = f"{__version__}-hypernode-host"
