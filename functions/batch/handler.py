"""Lambda entry point of the batch chunk function (``batch/handler.handler``): the state
machine's Distributed Map invokes it with one batch of a job's rows."""

from finmaas.batch.aws import build_chunk_handler

handler = build_chunk_handler()
