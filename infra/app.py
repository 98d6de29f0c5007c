#!/usr/bin/env python3
"""The CDK app: ``cdk synth`` / ``cdk deploy`` from the repository root (see cdk.json).

Context (``-c key=value``): stage (dev|prod), architecture (arm64|x86_64), memory_mb,
ephemeral_storage_mb, timeout_seconds, reserved_concurrency, provisioned_concurrency,
log_retention_days, bundling (pip|skip). No Docker and no AWS credentials are needed to
synthesize.
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from finmaas_infra import FinMaaSStack, StageSettings


def build_app(app: cdk.App | None = None) -> tuple[cdk.App, FinMaaSStack]:
    app = app or cdk.App()
    settings = StageSettings.from_context(app.node.try_get_context)
    env = None
    if os.environ.get("CDK_DEFAULT_ACCOUNT"):
        env = cdk.Environment(account=os.environ["CDK_DEFAULT_ACCOUNT"],
                              region=os.environ.get("CDK_DEFAULT_REGION"))
    stack = FinMaaSStack(app, f"FinMaaS-{settings.stage}", settings=settings, env=env,
                         description=f"FinMaaS pay-per-prediction API ({settings.stage})")
    cdk.Tags.of(stack).add("project", "finmaas")
    cdk.Tags.of(stack).add("stage", settings.stage)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack


if __name__ == "__main__":
    app, _ = build_app()
    app.synth()
