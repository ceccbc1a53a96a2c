"""Request and response models of the HTTP API (they are the OpenAPI schema).

Request models forbid unknown fields and use strict types: ``"top_k": "3"`` or an extra
``"modle"`` key is a 422 that says which field, not a silently ignored typo.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]+$"


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: an integer as JSON Schema means it: 3 or 3.0 (one number in JSON), not "3", true or 3.5
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
#: a positive one (the bound inside the validator, so that the schema says "minimum": 1)
PositiveJsonInt = Annotated[Annotated[StrictInt, Field(ge=1)], BeforeValidator(_integral)]


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. queue_full, text_too_long")
    message: str = Field(description="what went wrong and where")


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "missing or wrong API key (only when the server has api_key set)",
        404: "unknown model or route",
        413: "body too large, a text over the token limit with truncate=false, or over max_windows_per_text",
        422: "invalid request (fields, types, limits, empty text)",
        429: "queue full (see Retry-After)",
        503: "not ready, overloaded, or the request timed out (see Retry-After)",
    }.items()
}


class V2ErrorResponse(BaseModel):
    """The Open Inference Protocol's error shape, used under ``/v2``: ``error`` is the message."""

    error: str
    code: str = Field(description="machine-readable error code, as in the other routes' errors")


V2_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2ErrorResponse, "description": spec["description"]} for code, spec in ERRORS.items()
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "no bearer token",
        403: "wrong token",
        409: "reload failed: the previous bundles keep serving",
        422: "invalid routing config",
    }.items()
}


class ClassifyRequest(BaseModel):
    """Exactly one of ``text`` and ``texts``; at most one of ``top_k`` and ``all_scores``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "the film was wonderful ."},
                {"texts": ["great plot", "dull acting"], "model": "student", "all_scores": True},
            ]
        },
    )

    text: StrictStr | None = Field(None, description="one text")
    texts: list[StrictStr] | None = Field(None, description="several texts, answered in order")
    model: StrictStr | None = Field(None, description="a bundle name or a route (teacher, student, default, ...)")
    top_k: PositiveJsonInt | None = Field(None, description="also return the k best labels with scores")
    all_scores: StrictBool = Field(False, description="also return every label's score")
    truncate: StrictBool = Field(
        True, description="read texts over the model's token limit as long_text says; false: 413 if a token is lost"
    )
    long_text: Literal["truncate", "head_tail", "chunk"] | None = Field(
        None,
        description="a text over the token limit: truncate (its first tokens), head_tail (its start and end), "
        "chunk (overlapping windows over all of it, aggregated; 413 over max_windows_per_text); "
        "default: the server's long_text setting",
    )
    explain: StrictBool = Field(
        False,
        description="also return per-word attributions for the top label, by occlusion (one batched model run "
        "per text, at most max_explain_texts texts)",
    )
    routing_key: StrictStr | None = Field(None, max_length=256, description="sticky A/B key, e.g. a user id")
    request_id: StrictStr | None = Field(
        None, min_length=1, max_length=128, pattern=REQUEST_ID_PATTERN, description="echoed back; generated when absent"
    )
    policy: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="moderation policy deciding categories/flagged (e.g. strict); default: each model's default "
        "policy. Unknown: 422 unknown_policy. A boundary cascade escalates around this policy's thresholds",
    )

    @model_validator(mode="after")
    def _one_input(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) and 'texts' (a list of strings)")
        if self.top_k is not None and self.all_scores:
            raise ValueError("give at most one of 'top_k' and 'all_scores'")
        return self

    def text_list(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Score(BaseModel):
    label: str
    score: float


class TokenAttribution(BaseModel):
    token: str = Field(description="the word as it appears in the text")
    start: int = Field(description="its first character's offset in the text")
    end: int = Field(description="the offset just past its last character")
    attribution: float = Field(description="how much the label's score drops when the word is deleted")


class Explanation(BaseModel):
    label: str = Field(description="the label explained (the text's top label, or a flagged category)")
    score: float = Field(
        description="its calibrated score on the text as explained (the first max_length tokens, in one batch with "
        "its variants; with long_text head_tail or chunk, or a bundle served rows alone, it can differ from the "
        "answer's score)"
    )
    complete: bool = Field(
        description="every word was explained (false: the text is over the token limit or max_explain_tokens)"
    )
    tokens: list[TokenAttribution]


class TextResult(BaseModel):
    label: str = Field(description="the best label")
    score: float = Field(description="its probability")
    scores: list[Score] | None = Field(None, description="top_k or all labels, best first (when asked)")
    model: str = Field(description="the bundle that answered this text")
    checksum: str = Field(description="sha256 of that bundle's model.onnx")
    escalated: bool = Field(False, description="a cascade sent this text on to the teacher")
    truncated: bool = Field(False, description="some tokens of the text were not read (long_text truncate, head_tail)")
    windows: int = Field(1, description="model rows run for the text (several with long_text chunk)")
    explanation: Explanation | None = Field(None, description="per-word attributions (when explain is true)")
    categories: dict[str, bool] | None = Field(
        None,
        description="where the answering model has a policy: every non-benign category with a threshold -> "
        "score >= threshold (null: the model has no policy)",
    )
    flagged: bool | None = Field(None, description="any category true (null: the model has no policy)")
    policy: str | None = Field(
        None, description="the policy that decided categories/flagged (default where the named one omits the model)"
    )
    category_explanations: dict[str, Explanation] | None = Field(
        None,
        description="explain true and the text flagged: each flagged category -> its per-word attributions, from "
        "the same occlusion batch as explanation (null otherwise)",
    )


class ClassifyResponse(BaseModel):
    request_id: str
    route: str = Field(description="the route that handled the request")
    variant: str | None = Field(None, description="the A/B variant (model) chosen, if the route is an A/B test")
    shadowed: bool = Field(False, description="a shadow model was also run on this request")
    models: dict[str, str] = Field(description="every bundle that answered -> its model.onnx sha256")
    results: list[TextResult]


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: PositiveJsonInt | None = None
    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = None


class HFRequest(BaseModel):
    """The Hugging Face inference API body for text classification."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": "I like you"}]})

    inputs: StrictStr | list[StrictStr]
    parameters: HFParameters | None = None
    options: dict[str, Any] | None = Field(
        None, description="accepted for compatibility (use_cache, wait_for_model); ignored"
    )


class ModelCountersOut(BaseModel):
    requests: int
    texts: int
    errors: int
    queue_depth: int
    batches: int
    mean_batch_size: float


class ModelSummary(BaseModel):
    name: str
    role: str
    model_kind: str
    precision: str
    labels: list[str]
    max_length: int
    checksum: str
    status: str = Field(description="pending, loading, warming, ready or failed")
    providers: list[str]
    intra_op_threads: int | None = Field(
        None,
        description="ONNX Runtime intra-op threads of the session (0: its default, one per core; null until loaded)",
    )
    workers: int | None = Field(None, description="batch worker threads running this model's batches side by side")
    rows_alone: bool | None = Field(
        None,
        description="each text of a batch runs in its own ONNX Runtime call, so its scores do not depend on "
        "its batchmates (dynamic int8 bundles; the manifest's extra.batch_invariance says what batching "
        "would move; null until loaded)",
    )
    counters: ModelCountersOut
    manifest: dict[str, Any] | None = Field(None, description="the full manifest.json (GET /models/{name} only)")


class ModelsResponse(BaseModel):
    ready: bool
    models: list[ModelSummary]
    routing: dict[str, Any]


class ReloadResponse(BaseModel):
    reloaded: dict[str, dict[str, str | None]] = Field(description="model -> {old, new} model.onnx sha256")
    seconds: float
