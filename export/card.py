"""The model card (``README.md``) written into every bundle: what it is, labels, metrics, use, limits."""

from __future__ import annotations

from typing import Any

from kdserve.core.bundle import Manifest
from kdserve.export.checks import refused_attempts

KIND_TEXT = {
    "teacher": "fine-tuned BERT-family teacher",
    "bilstm": "BiLSTM student (Tang et al. 2019) distilled from a BERT teacher",
    "transformer": "small Transformer student distilled from a BERT teacher",
    "textcnn": "TextCNN student (Kim 2014) distilled from a BERT teacher",
}


def _pct(value: Any) -> str:
    return f"{float(value) * 100:.2f}%" if isinstance(value, (int, float)) else "n/a"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _precision_text(manifest: Manifest) -> str:
    quant = manifest.extra.get("quantization")
    if manifest.precision == "fp32" or not isinstance(quant, dict):
        return "fp32 (float32 weights and activations)"
    mode = "static, QDQ, calibrated on training texts" if quant.get("mode") == "static" else "dynamic"
    nodes = ", ".join(f"{n} {op}" for op, n in quant.get("int8_nodes", {}).items()) or "none"
    return (
        f"int8 {mode}: {quant.get('preset')} preset, per-channel {quant.get('per_channel')}, "
        f"reduce-range {quant.get('reduce_range')}; int8 nodes: {nodes}"
    )


def _num(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) and value == value else "n/a"


def calibration_warning(cal: dict[str, Any]) -> str | None:
    """The sentence that says a fitted temperature made the held-out ECE worse (None when it did
    not, or nothing was fitted): the fit and report halves disagree, which on a few hundred rows
    is sampling noise, and a reader of the card should not take the "after" row as a gain."""
    before, after = cal.get("ece_before"), cal.get("ece_after")
    if cal.get("method") != "temperature" or before is None or after is None or not after > before:
        return None
    return (
        f"the fitted temperature made the held-out ECE worse ({before:.4f} -> {after:.4f} on"
        f" {cal.get('report_rows')} rows): the fit half and the report half disagree by more than the"
        " temperature corrects; score calibration on more validation rows, or export with --calibrate none"
    )


def moderation_section(manifest: Manifest) -> list[str]:
    """Calibration (ECE/Brier before and after, on rows the fit never saw), the default policy's
    thresholds with their validation precision/recall, and per-label ranking scores."""
    lines: list[str] = []
    cal = manifest.calibration
    if cal:
        temps = ", ".join(f"{t:.3f}" for t in cal.get("temperatures", []))
        lines += [
            "## Calibration",
            "",
            f"Method `{cal.get('method')}`, temperature(s) {temps}: served scores are "
            + ("sigmoid(logit / T) per label." if manifest.problem_type == "multi_label" else "softmax(logits / T).")
            + f" Fitted on {cal.get('fit_rows')} validation rows, measured on the other {cal.get('report_rows')}"
            f" ({cal.get('split', '')}).",
            "",
            "| | ECE (15 bins) | Brier |",
            "|---|---|---|",
            f"| before | {_num(cal.get('ece_before'))} | {_num(cal.get('brier_before'))} |",
            f"| after | {_num(cal.get('ece_after'))} | {_num(cal.get('brier_after'))} |",
            "",
        ]
        if cal.get("ece_floor") is not None:
            lines += [
                f"ECE is biased upwards on few rows: a perfectly calibrated model with these scores would show"
                f" {_num(cal['ece_floor'])} on these {cal.get('report_rows')} rows (median of simulated outcomes),"
                " so an ECE near that figure is as calibrated as these rows can tell.",
                "",
            ]
        warning = calibration_warning(cal)
        if warning:
            lines += [f"**Note:** {warning[0].upper()}{warning[1:]}.", ""]
    policy = manifest.policy
    if policy:
        lines += [
            "## Default policy",
            "",
            f"Target `{policy.get('target')}`; thresholds chosen on {policy.get('chosen_on', 'validation rows')}; "
            f"benign labels (never flagged): {', '.join(policy.get('benign_labels', [])) or 'none'}.",
            "",
            "| label | threshold | precision | recall | target met | held-out precision | held-out recall |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, t in policy.get("thresholds", {}).items():
            v = policy.get("validation", {}).get(name, {})
            lines.append(
                f"| {name} | {_num(t)} | {_pct(v.get('precision'))} | {_pct(v.get('recall'))} | "
                f"{'yes' if v.get('met') else 'NO'} | {_pct(v.get('held_out_precision'))} | "
                f"{_pct(v.get('held_out_recall'))} |"
            )
        lines.append("")
    own = manifest.metrics.get(manifest.precision, {})
    scores = own.get("moderation") if isinstance(own, dict) else None
    if scores:
        lines += [
            "## Per-label ranking (calibrated scores, all validation rows)",
            "",
            "| label | ROC-AUC | average precision | recall at precision 0.90 |",
            "|---|---|---|---|",
            *(
                f"| {name} | {_num(c.get('roc_auc'))} | {_num(c.get('average_precision'))} | "
                f"{_num(c.get('recall_at_precision_0.9'))} |"
                for name, c in scores.items()
            ),
            "",
        ]
    return lines


def _pooling_rows(manifest: Manifest) -> list[str]:
    """A mean-pooling teacher's row: its checkpoint loads differently outside kdserve."""
    if manifest.extra.get("pooling") != "mean":
        return []
    return [
        "| pooling | mean of the token states under the attention mask (the checkpoint's config.json says "
        "`kdserve_pooling: mean`; plain `transformers` would read it through the [CLS] pooler) |"
    ]


def _invariance_rows(manifest: Manifest) -> list[str]:
    """How much a text's score moves with its batchmates (kdserve.export.invariance)."""
    block = manifest.extra.get("batch_invariance")
    if not isinstance(block, dict):
        return []
    measured = (
        f"{block['rows']} validation texts scored alone against the same texts in batches of "
        f"{block['batch_size']}: up to {block['max_abs_logit_diff']:.3g} logits apart "
        f"(RMS {block['rms_logit_diff']:.3g}), {block['decisions_changed']} decisions different"
    )
    if block["max_abs_logit_diff"] < 1e-3 and not block["decisions_changed"]:
        return [f"- A text's scores do not depend on the rest of its batch beyond float rounding ({measured})."]
    if block.get("served_alone"):
        return [
            f"- This graph's scores move with the rest of a batch ({measured}: dynamic int8 scales activations "
            "over the whole batch), so the bundle runs each text in its own ONNX Runtime call: a post gets the "
            "same scores whatever it is batched with. `kdserve export --dynamic-int8-rows batched` trades that "
            "for throughput."
        ]
    return [
        f"- Scores depend on the rest of the batch ({measured}): behind a batching server the same post can be "
        "scored differently from one request to the next. Export with `--dynamic-int8-rows alone` (dynamic "
        "int8), `--quantize static`, or serve the fp32 bundle where a decision must be reproducible."
    ]


def model_card(manifest: Manifest, model_bytes: int, triton_note: str = "") -> str:
    """Markdown for ``README.md``; reads everything from the finished manifest so the two agree."""
    labels = ", ".join(f"`{label}`" for label in manifest.labels)
    data = next((m.get("data") for m in manifest.metrics.values() if isinstance(m, dict)), "the validation data")
    rows = []
    for precision, m in manifest.metrics.items():
        if isinstance(m, dict):
            mark = " (this bundle)" if precision == manifest.precision else ""
            rows.append(
                f"| {precision}{mark} | {_pct(m.get('accuracy'))} | {_pct(m.get('macro_f1'))} | "
                f"{m.get('examples', 'n/a')} | {m.get('data', '')} [{m.get('split', '')}] |"
            )
    parity = manifest.extra.get("parity", {})
    gate = manifest.extra.get("accuracy_gate")
    lines = [
        f"# {manifest.name}",
        "",
        f"A {KIND_TEXT.get(manifest.model_kind, manifest.model_kind)}, exported to ONNX by kdserve "
        f"{manifest.kdserve_version or '(unknown version)'} on {manifest.created} from `{manifest.source_checkpoint}`.",
        "",
        "| | |",
        "|---|---|",
        f"| model | {manifest.model_kind}, {manifest.parameters:,} parameters |",
        f"| precision | {_precision_text(manifest)} |",
        f"| labels | {labels} |",
        f"| max length | {manifest.max_length} tokens, special tokens included; longer texts are truncated |",
        f"| inputs | {', '.join(manifest.inputs)}: int64 [batch, tokens], right-padded with id {manifest.pad_id} |",
        f"| output | `{manifest.output}`: float32 [batch, {len(manifest.labels)}] |",
        f"| graph | `model.onnx`, {_size(model_bytes)}, opset {manifest.opset}, "
        f"{manifest.extra.get('exporter', '')} export, optimization {manifest.extra.get('optimization', 'none')} |",
        *_pooling_rows(manifest),
        "",
        "## Validation metrics",
        "",
        "| precision | accuracy | macro-F1 | examples | data |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    if parity:
        lines.append(
            f"Parity: the fp32 graph matched PyTorch to max |logit difference| {parity.get('max_abs_diff', 0):.2e} "
            f"on {parity.get('texts')} validation texts of mixed lengths ({parity.get('truncated')} truncated), "
            f"with token ids identical to the training tokenizer's."
        )
    attempts = manifest.extra.get("quantization_attempts") or []
    if isinstance(gate, dict):
        verdict = "overridden with --force" if gate.get("forced") else ("passed" if gate.get("passed") else "failed")
        gated = (
            manifest.precision if manifest.precision != "fp32" else (attempts[-1]["precision"] if attempts else "int8")
        )
        auc = (
            f"; its largest per-label ROC-AUC loss was {gate['auc_drop_points']:.2f} points "
            f"(`{gate.get('auc_drop_label')}`) against an allowed {gate.get('max_auc_drop_points')}"
            if "auc_drop_points" in gate
            else ""
        )
        lines.append(
            f"Accuracy gate: {gated} lost {gate.get('drop_points', 0):.2f} points against an allowed "
            f"{gate.get('max_drop_points')}{auc} ({verdict})."
        )
    refused = refused_attempts(manifest.extra)
    if refused:
        lines.append(
            "Refused by the gate first: "
            + ", ".join(
                f"{a['precision']} (lost {a['drop_points']:.2f} accuracy points, "
                f"{a.get('auc_drop_points', 0.0):.2f} ROC-AUC points on `{a.get('auc_drop_label')}`)"
                for a in refused
            )
            + "."
        )
    lines += ["", *moderation_section(manifest)]
    compatibility = manifest.extra.get("compatibility")
    if isinstance(compatibility, dict) and "per_class" in compatibility:
        from kdserve.export.compat import card_section

        lines += ["", *card_section(compatibility), ""]
    lines += [
        "## Intended use",
        "",
        f"Classifying English texts like those of {data} into {labels}, behind `kdserve serve` or any ONNX "
        "Runtime + Hugging Face `tokenizers` client (`kdserve.core.bundle.BundleModel` shows the exact encoding). "
        "`kdserve bundle verify` checks every file's sha256 before use.",
        "",
        "## Limits",
        "",
        f"- Trained and measured on {data} only; accuracy on other domains, styles or languages is unknown: "
        "measure it with `kdserve eval --bundle DIR --data SPEC` first.",
        f"- Only the first {manifest.max_length} tokens of a text are read.",
        (
            "- Scores are temperature-calibrated on validation data from the training distribution only; "
            "on other data recheck ECE before trusting a score as a probability."
            if manifest.calibration.get("method") == "temperature"
            else "- Logits are not calibrated probabilities; a softmax over them is a score, not a confidence."
        ),
        "- It inherits the biases of its training data (and, for a student, of its teacher).",
        *_invariance_rows(manifest),
    ]
    if manifest.precision != "fp32":
        lines.append("- int8 kernels are tuned for the preset's CPU family; other CPUs run it, possibly slower.")
    if triton_note:
        lines += ["", triton_note.rstrip()]
    return "\n".join(lines) + "\n"
