"""mmdemo: adapt a multimodal (text + image) embedding model to your own data.

Importing this package loads no model, touches no network and starts no server.
"""

__version__ = "0.1.0"
