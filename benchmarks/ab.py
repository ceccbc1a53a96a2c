"""``kdserve bench ab``: replay a labelled dataset through a running server and score each variant.

The server's routing file decides what happens (an ``ab`` split, a ``shadow`` pair, a
``cascade``); the harness only sends ``{"text", "routing_key"}`` (plus ``"model": ROUTE`` when a
route is named) and reads each answer's ``variant`` and ``results[0]`` (``label``, ``score``,
``model``, ``escalated``). Answers are grouped by variant (by answering model when the route is
not an A/B test) into accuracy, macro-F1, escalation rate and latency; where the answers carry a
moderation decision (``categories``, from a policy), each category's flag precision, recall and F1
against the gold label too, and the windows and truncation long posts cost (``long_text``).

A/B variants see different examples, so their accuracies are not directly comparable; with
``agreement`` the harness also asks every model that answered for *every* example
(``"model": NAME``), which gives each model's accuracy on the same set and how often two
models agree: the numbers a team needs before shipping the student instead of the teacher.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from kdserve.bench.common import BenchError, machine_info, sample_examples
from kdserve.bench.configs import ABConfig as ABConfig
from kdserve.bench.http_bench import status_name
from kdserve.bench.loadgen import RunResult, Target, replay, run_async
from kdserve.bench.stats import summarize


def parse_answer(body: bytes | None) -> dict[str, Any] | None:
    """The fields the harness reads from a ``/classify`` answer, or None if it is not one."""
    try:
        data = json.loads(body or b"")
        first = data["results"][0]
        return {
            "label": str(first["label"]),
            "score": float(first.get("score", 0.0)),
            "model": first.get("model") or data.get("model"),
            "variant": data.get("variant"),
            "route": data.get("route"),
            "escalated": bool(first.get("escalated", False)),
            "shadowed": bool(data.get("shadowed", False)),
            "categories": first.get("categories"),
            "windows": first.get("windows"),
            "truncated": first.get("truncated"),
        }
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        return None


def send_bodies(target: Target, bodies: list[dict[str, Any]], concurrency: int, timeout_s: float) -> RunResult:
    requests = [target.request(json.dumps(body).encode()) for body in bodies]
    return run_async(lambda: replay(target, requests, concurrency, timeout_s))


def _answers(run: RunResult) -> list[dict[str, Any] | None]:
    out = []
    for record, body in zip(run.records, run.bodies or []):
        out.append(parse_answer(body) if 200 <= record.status < 300 else None)
    return out


def _check_labels(answers: Sequence[dict[str, Any] | None], labels: Sequence[str], source: str) -> None:
    seen = {a["label"] for a in answers if a}
    if seen and not seen & set(labels):
        raise BenchError(
            f"the server answers labels {sorted(seen)} but {source} has {list(labels)}: "
            f"give --label-names {','.join(sorted(seen))} in the dataset's label order"
        )


def _decision_scores(rows: Sequence[tuple[dict[str, Any], int, int]], labels: Sequence[str]) -> dict[str, Any]:
    """Per category of the answers' decisions: flag precision, recall and F1 against the gold label
    (a text is a positive of category C when its gold label is C), from the answers that have one."""
    decided = [(a["categories"], labels[gold]) for a, gold, _ in rows if isinstance(a.get("categories"), dict)]
    out: dict[str, Any] = {}
    for category in sorted({c for cats, _ in decided for c in cats}):
        tp = sum(bool(cats.get(category)) and gold == category for cats, gold in decided)
        flagged = sum(bool(cats.get(category)) for cats, _ in decided)
        actual = sum(gold == category for _, gold in decided)
        precision = tp / flagged if flagged else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[category] = {
            "flagged": flagged,
            "gold": actual,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
    return out


def group_stats(rows: Sequence[tuple[dict[str, Any], int, int]], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, escalation rate, score, decisions, windows and latency of (answer,
    gold label id, latency ns) rows."""
    from kdserve.core.metrics import compute_metrics

    if not rows:
        return {"examples": 0, "accuracy": None, "macro_f1": None, "escalation_rate": None}
    known = {name: i for i, name in enumerate(labels)}
    scored = [(gold, known[a["label"]]) for a, gold, _ in rows if a["label"] in known]
    metrics = compute_metrics([g for g, _ in scored], [p for _, p in scored], labels) if scored else None
    windows = [a["windows"] for a, _, _ in rows if isinstance(a.get("windows"), int)]
    return {
        "examples": len(rows),
        "accuracy": round(sum(1 for a, g, _ in rows if a["label"] == labels[g]) / len(rows), 4),
        "macro_f1": round(metrics.macro_f1, 4) if metrics else None,
        "per_class_f1": {k: round(v.f1, 4) for k, v in metrics.per_class.items()} if metrics else None,
        "decisions": _decision_scores(rows, labels),
        "escalation_rate": round(sum(a["escalated"] for a, _, _ in rows) / len(rows), 4),
        "mean_score": round(sum(a["score"] for a, _, _ in rows) / len(rows), 4),
        "mean_windows": round(sum(windows) / len(windows), 3) if windows else None,
        "truncated_rate": round(sum(bool(a.get("truncated")) for a, _, _ in rows) / len(rows), 4),
        "models": dict(Counter(str(a["model"]) for a, _, _ in rows)),
        "latency_ms": summarize((ns for _, _, ns in rows), 1e-6),
    }


def run_ab(config: ABConfig, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The ``kdserve bench ab`` result: per-variant scores and, optionally, cross-model agreement."""
    target = Target.parse(config.target, "/classify")
    examples, labels = sample_examples(
        config.data, config.limit, config.seed, config.split, config.label_names, replace=False
    )
    fields = {k: v for k, v in (("long_text", config.long_text), ("policy", config.policy)) if v is not None}
    extra: dict[str, Any] = {"model": config.route, **fields} if config.route else dict(fields)
    bodies = [{"text": text, "routing_key": f"{config.key_prefix}{i}", **extra} for i, (text, _) in enumerate(examples)]
    log(f"replaying {len(bodies)} examples from {config.data} ({config.split}) to {target.url}")
    run = send_bodies(target, bodies, config.concurrency, config.timeout_s)
    answers = _answers(run)
    _check_labels(answers, labels, config.data)
    failures = Counter(status_name(r.status) for r, a in zip(run.records, answers) if a is None)
    groups: dict[str, list[tuple[dict[str, Any], int, int]]] = defaultdict(list)
    for (_, gold), answer, record in zip(examples, answers, run.records):
        if answer is not None:
            key = answer["variant"] or str(answer["model"])
            groups[key].append((answer, gold, record.done - record.sent))
    all_rows = [row for rows in groups.values() for row in rows]
    result: dict[str, Any] = {
        "kind": "ab",
        "machine": machine_info(),
        "config": config.__dict__.copy(),
        "labels": list(labels),
        "target": target.url,
        "examples": len(examples),
        "answered": len(all_rows),
        "failures": dict(failures),
        "routes": dict(Counter(str(a["route"]) for a in answers if a)),
        "shadowed_fraction": round(sum(a["shadowed"] for a in answers if a) / max(len(all_rows), 1), 4),
        "overall": group_stats(all_rows, labels),
        "variants": {name: group_stats(rows, labels) for name, rows in sorted(groups.items())},
        "agreement": None,
    }
    for name, stats in result["variants"].items():
        log(
            f"variant {name}: {stats['examples']} examples, accuracy {stats['accuracy']}, "
            f"macro-F1 {stats['macro_f1']}, escalated {stats['escalation_rate']}, p99 {stats['latency_ms']['p99']} ms"
        )
    if config.agreement:
        result["agreement"] = _agreement(target, examples, labels, answers, config, fields, log)
    return result


def _agreement(
    target: Target,
    examples: Sequence[tuple[str, int]],
    labels: Sequence[str],
    answers: Sequence[dict[str, Any] | None],
    config: ABConfig,
    fields: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ask every model that answered about every example; pairwise agreement and full-set scores
    (``group_stats`` of each model's answers: accuracy, macro-F1, decisions)."""
    models = sorted({str(a["model"]) for a in answers if a and a["model"]})
    predictions: dict[str, list[str | None]] = {}
    per_model: dict[str, Any] = {}
    for model in models:
        bodies = [{"text": text, "model": model, **fields} for text, _ in examples]
        run = send_bodies(target, bodies, config.concurrency, config.timeout_s)
        answered = _answers(run)
        predictions[model] = [a["label"] if a else None for a in answered]
        rows = [(a, gold, r.done - r.sent) for a, (_, gold), r in zip(answered, examples, run.records) if a]
        stats = group_stats(rows, labels)
        per_model[model] = {"answered": len(rows), **{k: v for k, v in stats.items() if k != "examples"}}
        log(
            f"model {model} on all {len(examples)} examples: accuracy {stats['accuracy']}, macro-F1 {stats['macro_f1']}"
        )
    pairs = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            both = [(x, y) for x, y in zip(predictions[a], predictions[b]) if x is not None and y is not None]
            pairs[f"{a} vs {b}"] = round(sum(x == y for x, y in both) / len(both), 4) if both else None
    return {"models": per_model, "pairs": pairs}
