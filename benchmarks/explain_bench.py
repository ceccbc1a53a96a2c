"""``kdserve bench explain``: do explanations point at what decides, and what do they cost?

Two measurements against a running kdserve, both through ``POST /classify``:

* **Faithfulness (deletion test).** Every text of a labelled split is classified; the flagged ones
  (a moderation decision needs a policy) are explained (``"explain": true``). A word's weight is
  its largest attribution over the text's flagged categories (``category_explanations``: what the
  decision rests on, rather than the top label, which a multi-label bundle may not flag). Deleting
  the ``k`` most-attributed words of each must change its decision (the set of flagged categories) more
  often than deleting ``k`` words picked at random, ``random_draws`` draws per text; the ratio is
  the figure (an explanation no better than chance gives about 1).
* **Cost.** Texts of exactly ``cost_words`` words (dataset texts joined and cut) are sent one at a
  time, alternating with and without ``explain``, ``cost_requests`` of each: the p50 of each and
  their difference, which is what an explanation adds to one request.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from kdserve.bench.ab import send_bodies
from kdserve.bench.common import BenchError, machine_info, sample_examples
from kdserve.bench.configs import ExplainBenchConfig as ExplainBenchConfig
from kdserve.bench.loadgen import Target


def _results(target: Target, bodies: list[dict[str, Any]], config: ExplainBenchConfig) -> list[dict[str, Any]]:
    """``results[0]`` of each answer; a failed request is an error (the figures need every text)."""
    run = send_bodies(target, bodies, config.concurrency, config.timeout_s)
    out = []
    for record, body in zip(run.records, run.bodies or []):
        if not 200 <= record.status < 300:
            raise BenchError(f"{target.url} answered {record.status}: {(body or b'')[:300]!r}")
        out.append(json.loads(body or b"{}")["results"][0])
    return out


def flagged_set(result: dict[str, Any]) -> frozenset[str]:
    """The categories a result flags (empty when it flags none)."""
    return frozenset(k for k, v in (result.get("categories") or {}).items() if v)


def decisive_words(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The explained words of a flagged result, each ``attribution`` the largest over its flagged
    categories' explanations (the top label's explanation where the answer carries none)."""
    by_category = list((result.get("category_explanations") or {}).values())
    if not by_category:
        return list(result["explanation"]["tokens"])
    return [
        {**word, "attribution": max(x["tokens"][i]["attribution"] for x in by_category)}
        for i, word in enumerate(by_category[0]["tokens"])
    ]


def delete_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` without the character ``spans`` (word positions from an explanation), spaces squeezed."""
    kept, at = [], 0
    for start, end in sorted(spans):
        kept.append(text[at:start])
        at = max(at, end)
    kept.append(text[at:])
    return " ".join("".join(kept).split())


def _deletion_test(target: Target, config: ExplainBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    examples, _ = sample_examples(config.data, config.limit, config.seed, config.split, replace=False)
    fields: dict[str, Any] = {"model": config.model} if config.model else {}
    if config.policy:
        fields["policy"] = config.policy
    texts = [t for t, _ in examples]
    first = _results(target, [{"text": t, **fields} for t in texts], config)
    if all(r.get("categories") is None for r in first):
        raise BenchError("the answers carry no moderation decision: serve a bundle with a policy (or give --policy)")
    flagged = [(t, flagged_set(r)) for t, r in zip(texts, first) if r.get("flagged")]
    log(f"{len(flagged)} of {len(texts)} texts flagged; explaining them")
    explained = _results(target, [{"text": t, "explain": True, **fields} for t, _ in flagged], config)
    rng = random.Random(config.seed)
    top_bodies, random_bodies, kept = [], [], []
    for (text, decision), result in zip(flagged, explained):
        tokens = decisive_words(result)
        if len(tokens) <= config.k:
            continue  # deleting every word is no test of which words matter
        kept.append(decision)
        ranked = sorted(tokens, key=lambda w: -w["attribution"])[: config.k]
        top_bodies.append({"text": delete_spans(text, [(w["start"], w["end"]) for w in ranked]), **fields})
        for _ in range(config.random_draws):
            picked = rng.sample(tokens, config.k)
            random_bodies.append({"text": delete_spans(text, [(w["start"], w["end"]) for w in picked]), **fields})
    if not kept:
        raise BenchError(f"no flagged text has more than k={config.k} words")
    after_top = _results(target, top_bodies, config)
    after_random = _results(target, random_bodies, config)
    top_changed = sum(flagged_set(r) != d for r, d in zip(after_top, kept)) / len(kept)
    draws = [kept[i // config.random_draws] for i in range(len(after_random))]
    random_changed = sum(flagged_set(r) != d for r, d in zip(after_random, draws)) / len(draws)
    top_unflagged = sum(not r.get("flagged") for r in after_top) / len(kept)
    random_unflagged = sum(not r.get("flagged") for r in after_random) / len(draws)
    return {
        "texts": len(texts),
        "flagged": len(flagged),
        "tested": len(kept),
        "k": config.k,
        "random_draws": config.random_draws,
        "decision_changed": {"top_k": round(top_changed, 4), "random_k": round(random_changed, 4)},
        "unflagged": {"top_k": round(top_unflagged, 4), "random_k": round(random_unflagged, 4)},
        "ratio": round(top_changed / random_changed, 3) if random_changed else None,
    }


def cost_texts(texts: Sequence[str], words: int, n: int) -> list[str]:
    """``n`` texts of exactly ``words`` whitespace-separated words, cut from ``texts`` joined in turn."""
    pool = " ".join(texts).split()
    if len(pool) < words:
        raise BenchError(f"the dataset has {len(pool)} words, fewer than one {words}-word text")
    out = []
    for i in range(n):
        start = (i * words) % (len(pool) - words + 1)
        out.append(" ".join(pool[start : start + words]))
    return out


def _cost(target: Target, config: ExplainBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    examples, _ = sample_examples(config.data, None, config.seed, config.split, replace=False)
    texts = cost_texts([t for t, _ in examples], config.cost_words, config.cost_requests)
    fields: dict[str, Any] = {"model": config.model} if config.model else {}
    latencies: dict[bool, list[float]] = {False: [], True: []}
    for i, text in enumerate(texts):
        for explain in (i % 2 == 0, i % 2 != 0):  # alternate which goes first: drift hits both alike
            run = send_bodies(target, [{"text": text, "explain": explain, **fields}], 1, config.timeout_s)
            record = run.records[0]
            if not 200 <= record.status < 300:
                raise BenchError(f"{target.url} answered {record.status} to a {config.cost_words}-word text")
            latencies[explain].append((record.done - record.sent) / 1e6)
    # rounded once, here, so the difference reported below is the difference of the figures shown
    plain = round(statistics.median(latencies[False]), 3)
    explained = round(statistics.median(latencies[True]), 3)
    log(f"p50 at {config.cost_words} words: {plain:.3f} ms without explain, {explained:.3f} ms with")
    return {
        "words": config.cost_words,
        "requests_each": len(texts),
        "p50_ms": {"plain": plain, "explain": explained},
        "p90_ms": {
            "plain": round(statistics.quantiles(latencies[False], n=10)[-1], 3),
            "explain": round(statistics.quantiles(latencies[True], n=10)[-1], 3),
        },
        "explain_adds_p50_ms": round(explained - plain, 3),
    }


def run_explain_bench(config: ExplainBenchConfig, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The ``kdserve bench explain`` result: the deletion test and the cost of one explanation."""
    target = Target.parse(config.target, "/classify")
    result: dict[str, Any] = {"kind": "explain", "machine": machine_info(), "config": config.__dict__.copy()}
    result["deletion"] = _deletion_test(target, config, log) if config.deletion else None
    if result["deletion"]:
        d = result["deletion"]
        log(
            f"deleting the top {d['k']} words changed {d['decision_changed']['top_k']:.1%} of "
            f"{d['tested']} decisions, {d['k']} random words {d['decision_changed']['random_k']:.1%} "
            f"(ratio {d['ratio']})"
        )
    result["cost"] = _cost(target, config, log) if config.cost_requests else None
    return result
