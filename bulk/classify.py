"""Classifying one shard: the work both engines run, so their output is identical by construction.

A ``ShardWorker`` holds one ``BundleModel`` (one ONNX Runtime session, ``threads`` intra-op
threads), verified against its manifest when the worker starts: a bundle corrupted on a node's
disk fails there instead of scoring with the wrong weights. A shard's texts are tokenized once,
ordered by token count and run in batches of ``batch_size``, so each batch pads to nearly its own
length (the padding a random order wastes is most of the work on mixed short and long posts).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdserve.bulk.inputs import Shard, read_shard
from kdserve.bulk.output import commit_shard
from kdserve.core.bundle import BundleModel, Encoded


class ShardWorker:
    """One session; ``run_shard`` reads, classifies and commits one shard."""

    def __init__(self, bundle: str | Path, threads: int, batch_size: int) -> None:
        # The tokenizer's own thread pool would fight the other workers for the same cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model = BundleModel(bundle, intra_op_threads=threads, verify=True)
        self.batch_size = batch_size
        self.checksum = self.model.manifest.checksum

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits float32 [N, C], truncated bool [N]) in input order, in length-bucketed batches."""
        manifest = self.model.manifest
        # Tokenize in slices and keep only the truncated ids: a tokenizers Encoding of a long post
        # also holds its overflow (every token past max_length), hundreds of MiB for a shard of reviews.
        token_ids: list[list[int]] = []
        truncated = np.zeros(len(texts), dtype=bool)
        for lo in range(0, len(texts), 1024):
            encodings = self.model.tokenizer.encode_batch(list(texts[lo : lo + 1024]), add_special_tokens=True)
            token_ids.extend(e.ids for e in encodings)
            truncated[lo : lo + len(encodings)] = [bool(e.overflowing) for e in encodings]
            del encodings
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        out = np.zeros((len(token_ids), len(manifest.labels)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            lengths = [len(token_ids[i]) for i in chunk]
            width = max(max(lengths), 1)
            ids = np.full((len(chunk), width), manifest.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, (i, n) in enumerate(zip(chunk, lengths)):
                if n:
                    ids[row, :n] = token_ids[i]
                # As BundleModel.encode: an empty text runs as one unmasked pad token.
                mask[row, : max(n, 1)] = 1
            out[chunk] = self.model.run(Encoded(ids, mask, [max(n, 1) for n in lengths], []))
        return out, truncated

    def table(self, source: str, ids: Sequence[Any], rows: Sequence[int], texts: Sequence[str]) -> Any:
        """The output rows of one shard as a pyarrow Table (the README's Backfills section lists the columns)."""
        import pyarrow as pa

        logits, truncated = self.logits(texts)
        # the bundle's own served scores: calibrated softmax, or one sigmoid per category when multi-label
        labels = self.model.labels
        probs = (
            self.model.probabilities(logits).astype(np.float32)
            if len(texts)
            else np.zeros((0, len(labels)), np.float32)
        )
        top = probs.argmax(axis=1) if len(texts) else np.zeros(0, dtype=np.int64)
        columns: dict[str, Any] = {
            "source": pa.array([source] * len(texts), pa.string()),
            "row": pa.array(rows, pa.int64()),
            "id": pa.array(ids, pa.string() if ids and isinstance(ids[0], str) else pa.int64()),
            "label": pa.array([labels[i] for i in top], pa.string()),
            "score": pa.array(probs[np.arange(len(texts)), top], pa.float32()),
        }
        for index, label in enumerate(labels):
            columns[f"score_{label}"] = pa.array(probs[:, index], pa.float32())
        if self.model.manifest.policy.get("thresholds"):
            # the bundle's default policy decides, as the server does for a request naming no policy
            flags = self.model.flags(probs)
            columns["flagged"] = pa.array([bool(f) for f in flags], pa.bool_())
            columns["flags"] = pa.array(flags, pa.list_(pa.string()))
        columns["truncated"] = pa.array(truncated, pa.bool_())
        columns["bundle_checksum"] = pa.array([self.checksum] * len(texts), pa.string())
        return pa.table(columns)

    def run_shard(self, output: str, fmt: str, task: dict[str, Any], shard: Shard) -> dict[str, Any]:
        """Read, classify and commit one shard; returns its manifest plus timing and peak RSS."""
        start = time.perf_counter()
        ids, texts = read_shard(task, shard)
        table = self.table(task["path"], ids, range(shard.start, shard.stop), texts)
        meta = {
            "shard": shard.name,
            "input": task["path"],
            "row_start": shard.start,
            "row_stop": shard.stop,
            "rows": shard.rows,
            "bundle_checksum": self.checksum,
        }
        commit_shard(output, fmt, shard.name, table, meta)
        return {
            **meta,
            "seconds": time.perf_counter() - start,
            "pid": os.getpid(),
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
