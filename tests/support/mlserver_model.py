"""A tiny MLServer custom runtime (runs inside MLServer's own virtualenv, never in pytest):
``mls-profile`` answers customer ids with rows from ``mlserver_data.py``, and plants tokens in
a response header, a reply parameter, the reply id and the model version."""

from __future__ import annotations

import mlserver_data as data  # copied beside this file into the model folder
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class PlantedProfiles(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        ids = [int(i) for i in NumpyCodec.decode_input(payload.inputs[0]).reshape(-1)]
        rows = [data.row(i) for i in ids]
        outputs = [NumpyCodec.encode_output("customer_id", np.array(ids, dtype=np.int64))]
        for name in ("segment", "ssn", "notes", "account_secret"):
            outputs.append(StringCodec.encode_output(name, [str(r[name]) for r in rows]))
        return InferenceResponse(
            model_name=self.name,
            model_version=data.VERSION_TOKEN,
            id=data.ID_TOKEN,
            outputs=outputs,
            parameters={
                "headers": {"x-planted": data.HEADER_TOKEN},
                "trace": data.PARAMETER_TOKEN,
                "debug_row": rows[0]["ssn"] if rows else "",
            },
        )
