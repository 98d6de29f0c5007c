"""The peer servers of ``make bench-peers`` (``tests/bench/peers.py``): each serves the
same ONNX graph with the same onnxruntime settings as FinMaaS, with neither metering nor
key checks. They run in their own virtual environments (``.maas/peers/``), so they import
nothing of FinMaaS: only ``graph.py`` beside them, numpy and onnxruntime."""
