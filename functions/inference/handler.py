"""Lambda entry point of the inference API (``inference/handler.handler``).

The app, the model registry and the store clients are built here, once per container.
"""

from finmaas.lambda_handler import build_handler

handler = build_handler()
