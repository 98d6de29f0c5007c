"""KServe's own Python REST client, unchanged, against a FinMaaS server.

Runs in the virtual environment `make test` builds for it (.maas/kserve-client: KServe's
pins are not the project's) and prints, as JSON, what the client got, for
tests/test_v2.py to compare with /v1:

    python tests/kserve_client.py URL KEY MODEL ROWS_JSON json|binary
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(url: str, key: str, model: str, rows_json: str, encoding: str) -> None:
    rows = json.loads(rows_json)
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    headers = {"x-api-key": key}
    out = {"live": await client.is_server_live(url, headers=headers),
           "ready": await client.is_server_ready(url, headers=headers),
           "model_ready": await client.is_model_ready(url, model, headers=headers)}
    inputs = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            tensor = InferInput(name, [len(values)], "BYTES", values)
        else:
            tensor = InferInput(name, [len(values)], "FP64")
            tensor.set_data_from_numpy(np.array(values, dtype=np.float64),
                                       binary_data=encoding == "binary")
        inputs.append(tensor)
    request = InferRequest(model_name=model, infer_inputs=inputs)
    response = await client.infer(url, request, model_name=model, headers=headers)
    out["outputs"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
    out["parameters"] = dict(response.parameters or {})
    await client.close()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
