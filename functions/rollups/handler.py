"""Lambda entry point of the rollups function (``rollups/handler.handler``): the usage
table's stream, summed into the rollups that usage and invoices read, exactly once."""

from finmaas.metering.stream import build_handler

handler = build_handler()
