"""DynamoDB tables as the CDK app defines them, for moto-backed tests."""

from __future__ import annotations

from typing import Any

USAGE, ROLLUPS, TENANTS = "finmaas-test-usage", "finmaas-test-rollups", "finmaas-test-tenants"


def create_tables(client: Any) -> None:
    for name, keys in ((USAGE, ["pk"]), (ROLLUPS, ["pk", "sk"]), (TENANTS, ["pk"])):
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t}
                       for k, t in zip(keys, ["HASH", "RANGE"], strict=False)],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
        )
