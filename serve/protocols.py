"""Standard protocols over the same service, so clients nobody here wrote can call it.

- Hugging Face inference API, text classification: ``POST /`` and ``POST /models/{name}`` take
  ``{"inputs": str | [str], "parameters": {"top_k", "function_to_apply"}}`` and answer a list with
  one list of ``{"label", "score"}`` (best first) per input. A single string also gets a list of
  one list: that is what the HF API returns and what ``huggingface_hub.InferenceClient
  .text_classification`` unwraps (``[0]``).
- Open Inference Protocol (KServe V2) for text: health, server and model metadata, model
  readiness, and ``POST /v2/models/{name}/infer`` with one BYTES input ``text`` [N] answering
  ``probabilities`` FP32 [N, C] (the model's label order) and ``label`` BYTES [N]. Tensors may come
  and go as JSON or in the binary tensor extension (``Inference-Header-Content-Length``), which
  ``tritonclient.http`` uses by default. V2 model names are bundle names.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdserve import __version__
from kdserve.serve.errors import InvalidInput, NotFound, NotReady
from kdserve.serve.middleware import until_disconnect
from kdserve.serve.openapi_schema import v2_request_schema
from kdserve.serve.routing import TextAnswer
from kdserve.serve.schemas import ERRORS, V2_ERRORS, HFRequest, JsonInt, Score
from kdserve.serve.service import Service

# ------------------------------------------------------------------ Hugging Face


def _hf_scores(result: TextAnswer, function: str) -> np.ndarray:
    if function == "softmax" or result.logits is None:
        return result.probabilities
    logits = np.asarray(result.logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logits)) if function == "sigmoid" else logits


def hf_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["hugging face"])

    async def answer(body: HFRequest, model: str | None, request: Request) -> list[list[Score]]:
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        params = body.parameters
        function = (params.function_to_apply if params else None) or "softmax"
        top_k = params.top_k if params else None
        outcome = await until_disconnect(request.receive, service.classify(texts, model, None, True, "inputs"))
        out = []
        for result in outcome.results:
            scores = _hf_scores(result, function)
            order = np.argsort(-scores, kind="stable")[: top_k or len(scores)]
            out.append([Score(label=result.labels[i], score=float(scores[i])) for i in order])
        return out

    @router.post("/", response_model=list[list[Score]], responses=ERRORS)
    async def hf_default(body: HFRequest, request: Request) -> list[list[Score]]:
        """Hugging Face text-classification shape, default route."""
        return await answer(body, None, request)

    @router.post("/models/{name}", response_model=list[list[Score]], responses=ERRORS)
    async def hf_model(name: str, body: HFRequest, request: Request) -> list[list[Score]]:
        """Hugging Face text-classification shape, a named model or route (as the HF serverless URL)."""
        return await answer(body, name, request)

    return router


# ------------------------------------------------------------------ Open Inference Protocol V2

OUTPUTS = ("probabilities", "label")


# strict: a shape of "3" or a name of 1 is refused as the schema says (kdserve.serve.openapi_schema), not coerced
class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    shape: list[JsonInt]  # 28.0 is an integer in JSON Schema
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class V2Output(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, max_length=128)
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2Output] | None = None


def _strings(data: Any) -> list[str]:
    """The texts of a JSON ``data``: N strings ([N]), or N lists of one string ([N, 1] nested)."""
    if isinstance(data, list) and data and all(isinstance(v, list) and len(v) == 1 for v in data):
        data = [v[0] for v in data]
    if not isinstance(data, list) or any(not isinstance(v, str) for v in data):
        raise InvalidInput("input 'text' data must be a list of strings (or of one-string lists, for shape [N, 1])")
    return data


def _decode_bytes(buffer: bytes) -> list[str]:
    """The binary BYTES layout: each element is a uint32 little-endian length, then its bytes."""
    texts, at = [], 0
    while at < len(buffer):
        if at + 4 > len(buffer):
            raise InvalidInput("binary BYTES tensor is truncated (length prefix cut off)")
        (n,) = struct.unpack_from("<I", buffer, at)
        at += 4
        if at + n > len(buffer):
            raise InvalidInput("binary BYTES tensor is truncated (element shorter than its length)")
        try:
            texts.append(buffer[at : at + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput("input 'text': an element is not valid UTF-8") from None
        at += n
    return texts


def _encode_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode("utf-8") for v in values))


def parse_v2(raw: bytes, header_length: str | None) -> tuple[V2Request, list[str]]:
    """The request and its texts; the binary extension puts tensors after a JSON header."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} does not fit the body")
        header, tail = raw[: int(header_length)], raw[int(header_length) :]
    else:
        header, tail = raw, b""
    try:
        request = V2Request.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"invalid V2 inference request: {where}: {first['msg']}") from None
    if len(request.inputs) != 1 or request.inputs[0].name != "text":
        raise InvalidInput(f"expected exactly one input named 'text', got {[t.name for t in request.inputs]}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input 'text' must have datatype BYTES, got {tensor.datatype}")
    if not tensor.shape or len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidInput(f"input 'text' must have shape [N] (or [N, 1]), got {tensor.shape}")
    parameters = tensor.parameters or {}
    if "binary_data_size" in parameters:  # present means binary, even as null: never silently read as JSON
        size = parameters["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size != len(tail):
            raise InvalidInput(f"binary_data_size {size!r} does not match the {len(tail)} bytes after the header")
        texts = _decode_bytes(tail)
    else:
        texts = _strings(tensor.data)
    if len(texts) != tensor.shape[0]:
        raise InvalidInput(f"input 'text' has {len(texts)} elements but shape {tensor.shape}")
    return request, texts


def _flag(parameters: dict[str, Any] | None, name: str, default: bool) -> bool:
    """A boolean parameter; "false" (a string) is an error, not true."""
    value = (parameters or {}).get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {name!r} must be true or false (a JSON boolean), got {value!r}")
    return value


#: the one model version a bundle has (metadata lists it; versioned paths accept it)
VERSION = "1"


def v2_router(service: Service) -> APIRouter:
    # V2 errors have their own shape (see kdserve.serve.errors.error_response); any route may answer them
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], responses=V2_ERRORS)

    def bundle(name: str) -> Any:
        if name not in service.manifests:
            raise NotFound(f"no model {name!r}; V2 model names are bundle names: {', '.join(service.manifests)}")
        return service.manifests[name]

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kdserve", "version": __version__, "extensions": ["binary_tensor_data"]}

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready")
    async def ready() -> dict[str, bool]:
        if not service.ready:
            raise NotReady(f"not ready: the server is {service.status}", retry_after=service.settings.retry_after_s)
        return {"ready": True}

    def versioned(name: str, version: str) -> None:
        bundle(name)
        if version != VERSION:
            raise NotFound(f"model {name!r} has no version {version!r} (versions: {VERSION})")

    @router.get("/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        versioned(name, version)
        return await model_metadata(name)

    @router.get("/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> dict[str, Any]:
        versioned(name, version)
        return await model_ready(name)

    @router.get("/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        manifest = bundle(name)
        return {
            "name": name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(manifest.labels)]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {"labels": list(manifest.labels), "checksum": manifest.checksum},
        }

    @router.get("/models/{name}/ready")
    async def model_ready(name: str) -> dict[str, Any]:
        bundle(name)
        if not (service.ready and name in service.slots):
            raise NotReady(
                f"model {name!r} is {service.model_status.get(name, 'pending')}",
                retry_after=service.settings.retry_after_s,
            )
        return {"name": name, "ready": True}

    # The body is read raw (the binary extension is not JSON); the JSON form is declared for OpenAPI,
    # exactly as parse_v2 reads it (one BYTES input "text", the settings' text limits)
    infer_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": v2_request_schema(service.settings)}},
        }
    }

    # binary outputs (binary_data / binary_data_output) come as the JSON header, then the raw tensors
    infer_answers: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "the outputs as JSON, or (binary outputs asked) a JSON header of "
            "Inference-Header-Content-Length bytes followed by the tensors' bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    }

    @router.post("/models/{name}/infer", openapi_extra=infer_body, responses=infer_answers)
    async def infer(name: str, request: Request) -> Response:
        """V2 inference: JSON or binary tensors in, JSON or binary tensors out (per output's
        ``binary_data`` parameter, or the request's ``binary_data_output``)."""
        return await run_infer(name, request)

    @router.post("/models/{name}/versions/{version}/infer", openapi_extra=infer_body, responses=infer_answers)
    async def infer_version(name: str, version: str, request: Request) -> Response:
        """V2 inference at a model version (only version 1 exists), as ``tritonclient`` sends it."""
        versioned(name, version)
        return await run_infer(name, request)

    async def run_infer(name: str, request: Request) -> Response:
        bundle(name)
        req, texts = parse_v2(await request.body(), request.headers.get("inference-header-content-length"))
        wanted = req.outputs or [V2Output(name=n) for n in OUTPUTS]
        unknown = [o.name for o in wanted if o.name not in OUTPUTS]
        if unknown:
            raise InvalidInput(f"unknown output(s) {unknown}; this model has {list(OUTPUTS)}")
        outcome = await until_disconnect(request.receive, service.classify(texts, name, None, True, "text"))
        probs = np.stack([r.probabilities for r in outcome.results]).astype("<f4")
        labels = [r.labels[int(np.argmax(r.probabilities))] for r in outcome.results]
        binary_default = _flag(req.parameters, "binary_data_output", False)
        outputs, buffers = [], []
        for out in wanted:
            binary = _flag(out.parameters, "binary_data", binary_default)
            if out.name == "probabilities":
                entry: dict[str, Any] = {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape)}
                payload, data = probs.tobytes(), probs.ravel().tolist()
            else:
                entry = {"name": "label", "datatype": "BYTES", "shape": [len(labels)]}
                payload, data = _encode_bytes(labels), labels
            if binary:
                entry["parameters"] = {"binary_data_size": len(payload)}
                buffers.append(payload)
            else:
                entry["data"] = data
            outputs.append(entry)
        body: dict[str, Any] = {
            "model_name": name,
            "model_version": "1",
            "outputs": outputs,
            "parameters": {"checksum": outcome.results[0].checksum, "route": outcome.route},
        }
        if req.id is not None:
            body["id"] = req.id
        if not buffers:
            return JSONResponse(body)
        header = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return Response(
            header + b"".join(buffers),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    return router
