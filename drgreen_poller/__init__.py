"""drgreen-poller: the webhooks the Dr Green DAPP API does not have.

This package polls the Dr Green API for one or many NFT holders, detects every transition and
delivers signed, durable events; it also ships a local Dr Green sandbox.
"""

__version__ = "0.1.0"
# Sent on every request we make: to Dr Green and to every webhook receiver.
USER_AGENT = f"drgreen-poller/{__version__}"
