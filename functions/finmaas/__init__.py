"""FinMaaS: financial models sold per prediction.

The package is shared by the Lambda functions (``functions/<name>/handler.py``), the
local server and the ``maas`` CLI. Only the serving path (``api``, ``registry``,
``modelstore``, ``metering``, ``tenants``) is imported inside Lambda; training code lives
in ``finmaas_recipes`` and never enters the runtime bundle.
"""

__version__ = "0.1.0"
