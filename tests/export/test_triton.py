"""`--format triton`: a Triton / KServe model repository, its config.pbtxt checked structurally."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.export.triton import config_pbtxt

TOKEN = re.compile(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """A protobuf text-format reader for what config.pbtxt uses: scalars, nested messages and
    [ ... ] lists of scalars or messages. Each field maps to the list of its values."""
    tokens = TOKEN.findall(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal pos
        fields: dict[str, list[Any]] = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            assert re.fullmatch(r"[a-z_]+", name), f"bad field name {name!r}"
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            got = value()
            fields.setdefault(name, []).extend(got if isinstance(got, list) and name in ("input", "output") else [got])
        pos += 1
        return fields

    return message(None)


def test_config_pbtxt_structure() -> None:
    config = parse_pbtxt(config_pbtxt("m-int8", ["input_ids", "attention_mask"], 3, 32, 500))
    assert config["name"] == ["m-int8"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [32]
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        (["input_ids"], ["TYPE_INT64"], [[-1]]),
        (["attention_mask"], ["TYPE_INT64"], [[-1]]),
    ]
    (output,) = config["output"]
    assert (output["name"], output["data_type"], output["dims"], output["label_filename"]) == (
        ["logits"],
        ["TYPE_FP32"],
        [[3]],
        ["labels.txt"],
    )
    assert config["dynamic_batching"] == [{"max_queue_delay_microseconds": [500]}]


def test_triton_repository_layout_and_model(
    tiny_teacher_dir: Path, export_config: Callable[..., Any], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from kdserve.export.pipeline import export_checkpoint

    written = export_checkpoint(
        export_config(tiny_teacher_dir, tmp_path, name="tiny", format="triton", triton_max_batch_size=16)
    )
    assert written == [tmp_path / "tiny-fp32", tmp_path / "tiny-int8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-fp32", "tiny-int8"]
    for model_dir in written:
        files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
        assert files == ["1/model.onnx", "README.md", "config.pbtxt", "labels.txt", "tokenizer.json"]
        config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
        assert config["name"] == [model_dir.name]  # Triton requires the folder name
        assert config["max_batch_size"] == [16] and config["platform"] == ["onnxruntime_onnx"]
        names = [i["name"][0] for i in config["input"]]
        assert names == ["input_ids", "attention_mask", "token_type_ids"]
        assert (model_dir / "labels.txt").read_text() == "negative\npositive\n"
        card = (model_dir / "README.md").read_text()
        assert "tokenization happens in the client" in card and "pad every request to 32 tokens" in card
        # the dynamic int8 graph's batch dependence is spelled out where Triton would batch it
        assert ("scores depend on its batchmates" in card) == model_dir.name.endswith("int8")

        # The graph takes exactly the declared inputs with a dynamic token axis: run it as Triton would.
        session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(32)
        tokenizer.enable_padding(length=32)
        encodings = tokenizer.encode_batch(["the movie was great .", "awful"])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})
        assert logits.shape == (2, 2) and logits.argmax(-1).tolist() == [1, 0]
