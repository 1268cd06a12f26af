"""hubbub: a self-hosted, wire-compatible Azure Web PubSub / SignalR serverless service."""

__version__ = "0.1.0"
__all__ = ["__version__"]
