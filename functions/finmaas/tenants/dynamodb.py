"""Tenants table (partition key ``pk``): ``TENANT#<name>``, ``KEY#<api key id>`` and, for
keys minted by the embedded gateway only, ``KEYHASH#<sha256>``. Every lookup on the
request path is a single GetItem."""

from __future__ import annotations

from typing import Any

from ..plans import get_plan
from .base import ApiKey, Tenant, TenantExists, TenantStore, now_iso


class DynamoDBTenantStore(TenantStore):
    def __init__(self, table: str, *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.client = client
        self.table = table

    @property
    def location(self) -> str:
        return f"DynamoDB table {self.table} in {self.client.meta.region_name}"

    def _get(self, pk: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table, Key={"pk": {"S": pk}},
                                    ConsistentRead=True).get("Item")
        return {k: next(iter(v.values())) for k, v in item.items()} if item else None

    @staticmethod
    def _tenant(item: dict[str, Any] | None) -> Tenant | None:
        return Tenant(item["name"], item["plan"], item["status"], item["created_at"]) \
            if item else None

    @staticmethod
    def _key(item: dict[str, Any] | None) -> ApiKey | None:
        return ApiKey(item["key_id"], item["tenant"], item["created_at"],
                      item.get("revoked_at")) if item else None

    def create_tenant(self, name: str, plan: str) -> Tenant:
        from botocore.exceptions import ClientError

        self.check_name(name)
        get_plan(plan)
        tenant = Tenant(name, plan, "active", now_iso())
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"pk": {"S": f"TENANT#{name}"}, "kind": {"S": "tenant"},
                      "name": {"S": name}, "plan": {"S": plan}, "status": {"S": "active"},
                      "created_at": {"S": tenant.created_at}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise TenantExists(f"tenant {name!r} already exists") from exc
            raise
        return tenant

    def get_tenant(self, name: str) -> Tenant | None:
        return self._tenant(self._get(f"TENANT#{name}"))

    def list_tenants(self) -> list[Tenant]:
        items = self._scan("kind = :k", {":k": "tenant"})
        return sorted((t for t in map(self._tenant, items) if t), key=lambda t: t.name)

    def _update_existing(self, pk: str, missing: str, **kwargs: Any) -> None:
        """An UpdateItem that must not create the item: KeyError(missing) if absent."""
        from botocore.exceptions import ClientError

        try:
            self.client.update_item(TableName=self.table, Key={"pk": {"S": pk}},
                                    ConditionExpression="attribute_exists(pk)", **kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise KeyError(missing) from exc
            raise

    def _scan(self, filter_expression: str, values: dict[str, str]) -> list[dict[str, Any]]:
        """Every item matching a filter (operator commands only; not on the request path)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table, "FilterExpression": filter_expression,
            "ExpressionAttributeValues": {k: {"S": v} for k, v in values.items()},
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.scan(**kwargs)
            items += [{k: next(iter(v.values())) for k, v in raw.items()}
                      for raw in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_plan(self, name: str, plan: str) -> Tenant:
        get_plan(plan)
        self._update_existing(f"TENANT#{name}", f"no tenant {name!r}",
                              UpdateExpression="SET #p = :p",
                              ExpressionAttributeNames={"#p": "plan"},
                              ExpressionAttributeValues={":p": {"S": plan}})
        tenant = self.get_tenant(name)
        assert tenant
        return tenant

    def set_status(self, name: str, status: str) -> Tenant:
        self.check_status(status)
        self._update_existing(f"TENANT#{name}", f"no tenant {name!r}",
                              UpdateExpression="SET #s = :s",  # status is a reserved word
                              ExpressionAttributeNames={"#s": "status"},
                              ExpressionAttributeValues={":s": {"S": status}})
        tenant = self.get_tenant(name)
        assert tenant
        return tenant

    def add_key(self, key_id: str, tenant: str, key_hash: str | None = None) -> ApiKey:
        key = self._new_key(key_id, tenant)
        item = {"pk": {"S": f"KEY#{key_id}"}, "kind": {"S": "key"}, "key_id": {"S": key_id},
                "tenant": {"S": tenant}, "created_at": {"S": key.created_at}}
        self.client.put_item(TableName=self.table, Item=item)
        if key_hash:
            self.client.put_item(TableName=self.table, Item={
                **item, "pk": {"S": f"KEYHASH#{key_hash}"}, "kind": {"S": "keyhash"}})
        return key

    def get_key(self, key_id: str) -> ApiKey | None:
        return self._key(self._get(f"KEY#{key_id}"))

    def find_key_by_hash(self, key_hash: str) -> ApiKey | None:
        item = self._get(f"KEYHASH#{key_hash}")
        return self.get_key(item["key_id"]) if item else None

    def revoke_key(self, key_id: str) -> ApiKey:
        self._update_existing(f"KEY#{key_id}", f"no key {key_id!r}",
                              UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :t)",
                              ExpressionAttributeValues={":t": {"S": now_iso()}})
        key = self.get_key(key_id)
        assert key
        return key

    def list_keys(self, tenant: str) -> list[ApiKey]:
        items = self._scan("kind = :k AND tenant = :t", {":k": "key", ":t": tenant})
        return sorted((k for k in map(self._key, items) if k), key=lambda k: k.created_at)
