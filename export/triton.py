"""``kdserve export --format triton``: a bundle as an NVIDIA Triton / KServe model repository entry.

Layout under the output folder (the repository root Triton is pointed at)::

    <name>/config.pbtxt      platform onnxruntime_onnx, dims -1, dynamic batching
    <name>/1/model.onnx      the bundle's graph, unchanged
    <name>/labels.txt        one label a line (Triton's classification extension)
    <name>/tokenizer.json    for the client: Triton runs the graph only, tokenization is the caller's
    <name>/README.md         the model card

Standard library only.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

TRITON_VERSION_DIR = "1"


def config_pbtxt(
    name: str,
    inputs: Sequence[str],
    num_labels: int,
    max_batch_size: int,
    queue_delay_us: int,
    output: str = "logits",
) -> str:
    """The ``config.pbtxt`` text. With ``max_batch_size`` > 0 Triton adds the batch dimension
    itself, so each input is ``dims: [ -1 ]`` (tokens) and the output ``dims: [ num_labels ]``."""
    blocks = []
    for input_name in inputs:
        blocks.append(f'  {{\n    name: "{input_name}"\n    data_type: TYPE_INT64\n    dims: [ -1 ]\n  }}')
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        "input [\n" + ",\n".join(blocks) + "\n]\n"
        "output [\n"
        "  {\n"
        f'    name: "{output}"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: [ {num_labels} ]\n"
        '    label_filename: "labels.txt"\n'
        "  }\n"
        "]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {queue_delay_us}\n"
        "}\n"
    )


TRITON_NOTE = """## Serving with Triton or KServe

This folder is a Triton model repository entry (`config.pbtxt`, `1/model.onnx`), usable as is by
NVIDIA Triton (`tritonserver --model-repository <parent folder>`) or KServe's Triton runtime.
Triton runs the ONNX graph only: **tokenization happens in the client**. Encode texts with
`tokenizer.json` (Hugging Face `tokenizers`; truncate to {max_length} tokens, special tokens
included) and send int64 `{inputs}` of shape [batch, tokens] with right padding (pad id {pad_id},
attention mask 0 there){types}. Triton's dynamic batcher merges only requests of the same shape,
so pad every request to {max_length} tokens to let it batch them. `labels.txt` maps logit index
to label.
"""


def write_triton_model(
    bundle: Path,
    repository: Path,
    model_name: str,
    max_batch_size: int,
    queue_delay_us: int,
    inputs: Sequence[str],
    labels: Sequence[str],
    card: str,
) -> Path:
    """Copy a (verified) bundle folder into ``repository/model_name`` in Triton's layout."""
    target = repository / model_name
    (target / TRITON_VERSION_DIR).mkdir(parents=True, exist_ok=False)
    shutil.copyfile(bundle / "model.onnx", target / TRITON_VERSION_DIR / "model.onnx")
    shutil.copyfile(bundle / "tokenizer.json", target / "tokenizer.json")
    (target / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    (target / "config.pbtxt").write_text(
        config_pbtxt(model_name, inputs, len(labels), max_batch_size, queue_delay_us), encoding="utf-8"
    )
    (target / "README.md").write_text(card, encoding="utf-8")
    return target
