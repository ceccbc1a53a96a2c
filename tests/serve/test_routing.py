"""Routing policies over real tiny ONNX bundles: fixed, sticky A/B, shadow, cascade, validation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import prometheus_client as prom
import pytest

from kdserve.serve.routing import ModelInfo, RoutedAnswer, Router, RoutingError, Scores, UnknownModel, load_config
from kdserve.serve.scores import Reading
from tests.conftest import REPO

TEXTS = [
    "the movie was great .",
    "the film was awful .",
    "the plot was",
    "good but bad",
    "the acting was quite dull .",
    "not good",
    "the",
    "wonderful boring film",
    "a",
    "really excellent",
]


class Boom(Exception):
    """An infer failure the router must pass through unchanged."""


class RealInfer:
    """The server's infer contract over real ``BundleModel``s; records every call.

    ``gates[model]`` (an asyncio.Event) holds that model's calls until set; ``fail`` lists models
    whose calls raise ``Boom``."""

    def __init__(self, bundles: dict, fail: tuple[str, ...] = ()) -> None:
        self.bundles = bundles
        self.fail = fail
        self.gates: dict[str, asyncio.Event] = {}
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, model: str, texts: list[str], reading: Reading) -> Scores:
        from kdserve.core.bundle import softmax

        self.calls.append((model, list(texts)))
        if model in self.gates:
            await self.gates[model].wait()
        if model in self.fail:
            raise Boom(f"{model} is down")
        bundle = self.bundles[model]
        logits = bundle.predict(texts)
        return Scores(model, bundle.manifest.checksum, list(bundle.manifest.labels), softmax(logits), logits)


@pytest.fixture(scope="module")
def bundles(tiny_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The three tiny bundles plus ``tiny-contrarian``: tiny-textcnn's network with its two label
    names swapped, a real model that disagrees with tiny-textcnn on every text."""
    from kdserve.core.bundle import BundleModel, read_manifest, write_manifest

    folder = tmp_path_factory.mktemp("contrarian") / "tiny-contrarian"
    shutil.copytree(tiny_bundles / "tiny-textcnn", folder)
    manifest = read_manifest(folder)
    manifest.name, manifest.labels = "tiny-contrarian", ["positive", "negative"]
    (folder / "labels.json").write_text(json.dumps(manifest.labels) + "\n")
    write_manifest(folder, manifest)
    paths = {name: tiny_bundles / name for name in ("tiny-textcnn", "tiny-bilstm", "tiny-teacher")}
    paths["tiny-contrarian"] = folder
    return {name: BundleModel(path, intra_op_threads=1) for name, path in paths.items()}


@pytest.fixture(scope="module")
def models(bundles: dict) -> dict[str, ModelInfo]:
    return {n: ModelInfo(n, b.manifest.role, list(b.manifest.labels)) for n, b in bundles.items()}


def probs(bundles: dict, model: str, texts: list[str]) -> np.ndarray:
    from kdserve.core.bundle import softmax

    return softmax(bundles[model].predict(texts))


def metric(router: Router, name: str, **labels: str) -> float:
    return router.registry.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- names, defaults, fixed


def test_default_aliases_and_model_names(bundles: dict, models: dict) -> None:
    router = Router(models)
    routes = router.describe()["routes"]
    assert {k: (v["policy"], v["model"], v["source"]) for k, v in routes.items()} == {
        "default": ("fixed", "tiny-bilstm", "implicit"),  # first student by name
        "student": ("fixed", "tiny-bilstm", "implicit"),
        "teacher": ("fixed", "tiny-teacher", "implicit"),
    }
    assert routes["default"]["alias_of"] == "student" and "alias_of" not in routes["teacher"]
    infer = RealInfer(bundles)
    answer = asyncio.run(router.classify(TEXTS[:3], None, None, infer))
    assert (answer.route, answer.variant, answer.shadowed) == ("default", None, False)
    assert [a.model for a in answer.answers] == ["tiny-bilstm"] * 3
    np.testing.assert_array_equal(
        np.stack([a.probabilities for a in answer.answers]), probs(bundles, "tiny-bilstm", TEXTS[:3])
    )
    by_name = asyncio.run(router.classify(TEXTS[:2], "tiny-textcnn", None, infer))
    assert (by_name.route, [a.model for a in by_name.answers]) == ("tiny-textcnn", ["tiny-textcnn"] * 2)
    teacher = asyncio.run(router.classify(TEXTS[:1], "teacher", None, infer))
    assert (teacher.route, teacher.answers[0].model) == ("teacher", "tiny-teacher")
    assert infer.calls == [("tiny-bilstm", TEXTS[:3]), ("tiny-textcnn", TEXTS[:2]), ("tiny-teacher", TEXTS[:1])]
    with pytest.raises(UnknownModel) as info:
        asyncio.run(router.classify(TEXTS[:1], "bert-large", None, infer))
    assert info.value.valid == [
        "default",
        "student",
        "teacher",
        "tiny-bilstm",
        "tiny-contrarian",
        "tiny-teacher",
        "tiny-textcnn",
    ]
    assert str(info.value) == (
        "unknown model or route 'bert-large'; valid names: default, student, teacher, "
        "tiny-bilstm, tiny-contrarian, tiny-teacher, tiny-textcnn"
    )
    assert asyncio.run(router.classify([], None, None, infer)) == RoutedAnswer("default", [])
    assert len(infer.calls) == 3  # an empty request runs no model


def test_default_is_teacher_without_students_and_config_overrides(models: dict) -> None:
    only_teacher = Router({"tiny-teacher": models["tiny-teacher"]})
    assert sorted(only_teacher.describe()["routes"]) == ["default", "teacher"]
    assert only_teacher.resolve(None)[1].model == "tiny-teacher"  # type: ignore[union-attr]
    config = {
        "routes": {
            "default": {"policy": "fixed", "model": "tiny-textcnn"},
            "student": {"policy": "fixed", "model": "tiny-contrarian"},
            "fast": {"policy": "fixed", "model": "tiny-textcnn"},
        }
    }
    router = Router(models, config)
    routes = router.describe()["routes"]
    assert (routes["default"]["model"], routes["default"]["source"]) == ("tiny-textcnn", "config")
    assert routes["student"]["model"] == "tiny-contrarian"
    assert (routes["teacher"]["model"], routes["teacher"]["source"]) == ("tiny-teacher", "implicit")
    assert router.resolve("fast")[0] == "fast"
    assert Router({}).describe()["routes"] == {}
    with pytest.raises(UnknownModel, match=r"unknown model or route 'default'; valid names: \(none loaded\)"):
        Router({}).resolve(None)


def test_default_follows_a_configured_student_route(models: dict) -> None:
    variants = {"tiny-textcnn": 1.0, "tiny-bilstm": 1.0}
    router = Router(models, {"routes": {"student": {"policy": "ab", "variants": variants}}})
    routes = router.describe()["routes"]
    assert routes["default"] == {"policy": "ab", "variants": variants, "source": "implicit", "alias_of": "student"}
    assert routes["teacher"]["model"] == "tiny-teacher"
    # one user, one variant, whichever name reaches the route
    assert all(router.pick_variant("default", f"u{i}") == router.pick_variant("student", f"u{i}") for i in range(200))
    teacher_route = {"policy": "cascade", "student": "tiny-textcnn", "teacher": "tiny-teacher", "threshold": 0.5}
    with_student = Router(
        {n: models[n] for n in ("tiny-teacher", "tiny-textcnn")}, {"routes": {"teacher": teacher_route}}
    )
    assert with_student.resolve(None)[1].policy == "fixed"  # a student exists: default follows "student"
    no_students = Router(
        {"tiny-teacher": models["tiny-teacher"]}, {"routes": {"teacher": {"policy": "fixed", "model": "tiny-teacher"}}}
    )
    assert no_students.describe()["routes"]["default"]["alias_of"] == "teacher"


# ---------------------------------------------------------------- A/B


def expected_variant(route: str, key: str, variants: dict[str, float]) -> str:
    """An independent restatement of the documented rule: blake2b-64 of route NUL key -> [0, 1)."""
    u = int.from_bytes(hashlib.blake2b(f"{route}\x00{key}".encode(), digest_size=8).digest(), "big") / 2**64
    bound = 0.0
    for name, weight in variants.items():
        bound += weight / sum(variants.values())
        if u < bound:
            return name
    return name


def test_ab_is_sticky_stable_and_honours_weights(models: dict) -> None:
    variants = {"tiny-teacher": 0.1, "tiny-bilstm": 0.9}
    router = Router(models, {"routes": {"ab-test": {"policy": "ab", "variants": variants}}})
    picks = [router.pick_variant("ab-test", f"user-{i}") for i in range(10_000)]
    assert picks == [expected_variant("ab-test", f"user-{i}", variants) for i in range(10_000)]
    assert abs(picks.count("tiny-teacher") / 10_000 - 0.1) <= 0.02
    assert picks == [router.pick_variant("ab-test", f"user-{i}") for i in range(10_000)]  # sticky
    three = {"tiny-textcnn": 1, "tiny-bilstm": 2, "tiny-teacher": 1}  # weights need not sum to 1
    router.update({"routes": {"ab-test": {"policy": "ab", "variants": three}}})
    picks = [router.pick_variant("ab-test", f"k{i}") for i in range(10_000)]
    for name, share in (("tiny-textcnn", 0.25), ("tiny-bilstm", 0.5), ("tiny-teacher", 0.25)):
        assert abs(picks.count(name) / 10_000 - share) <= 0.02


def test_ab_stable_across_processes(models: dict) -> None:
    config = {"routes": {"ab": {"policy": "ab", "variants": {"tiny-teacher": 0.5, "tiny-bilstm": 0.5}}}}
    here = [Router(models, config).pick_variant("ab", f"u{i}") for i in range(50)]
    code = (
        "import json; from kdserve.serve.routing import Router, ModelInfo\n"
        "m = {n: ModelInfo(n, r, ['negative', 'positive']) for n, r in "
        "(('tiny-teacher', 'teacher'), ('tiny-bilstm', 'student'))}\n"
        f"r = Router(m, {config!r})\n"
        "print(json.dumps([r.pick_variant('ab', f'u{i}') for i in range(50)]))\n"
    )
    for hash_seed in ("1", "2"):  # Python's own hash() would differ between these
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
        )
        assert json.loads(out.stdout) == here


def test_ab_without_key_is_seeded_random(bundles: dict, models: dict) -> None:
    config = {"routes": {"ab": {"policy": "ab", "variants": {"tiny-teacher": 0.3, "tiny-bilstm": 0.7}}}}
    draws = [Router(models, config, seed=s) for s in (5, 5, 6)]
    seqs = [[r.pick_variant("ab", None) for _ in range(10_000)] for r in draws]
    assert seqs[0] == seqs[1] and seqs[0] != seqs[2]
    assert abs(seqs[0].count("tiny-teacher") / 10_000 - 0.3) <= 0.02


def test_ab_classify_answers_with_the_variant(bundles: dict, models: dict) -> None:
    variants = {"tiny-teacher": 0.5, "tiny-textcnn": 0.5}
    router = Router(models, {"routes": {"ab": {"policy": "ab", "variants": variants}}})
    infer = RealInfer(bundles)
    seen = []
    for i in range(20):
        first = asyncio.run(router.classify(TEXTS[:2], "ab", f"user-{i}", infer))
        again = asyncio.run(router.classify(TEXTS[:2], "ab", f"user-{i}", infer))
        assert first.variant == again.variant == expected_variant("ab", f"user-{i}", variants)
        assert [a.model for a in first.answers] == [first.variant] * 2
        np.testing.assert_array_equal(first.answers[1].probabilities, probs(bundles, first.variant, TEXTS[:2])[1])
        seen.append(first.variant)
    for name in variants:
        assert metric(router, "kdserve_ab_assignments_total", route="ab", variant=name) == 2 * seen.count(name)
    assert set(seen) == set(variants)


# ---------------------------------------------------------------- cascade


def threshold_escalating(scores: list[float], k: int) -> float:
    """A threshold halfway between the k-th and (k+1)-th lowest score: exactly k of them fall below it."""
    s = sorted(scores)
    assert s[k - 1] < s[k]
    return (s[k - 1] + s[k]) / 2


def test_cascade_escalates_exactly_the_unsure_texts(bundles: dict, models: dict) -> None:
    student = probs(bundles, "tiny-textcnn", TEXTS)
    top, score = student.argmax(axis=1), student.max(axis=1)
    labels = models["tiny-textcnn"].labels
    per_label = {label: [float(score[i]) for i in range(len(TEXTS)) if top[i] == c] for c, label in enumerate(labels)}
    assert len(per_label["negative"]) >= 5 and len(per_label["positive"]) >= 2  # both labels win on some texts
    # a strict threshold for negative answers, a lenient default for the rest
    neg_threshold = threshold_escalating(per_label["negative"], 4)
    default = threshold_escalating(per_label["positive"], 1)
    config = {
        "routes": {
            "default": {
                "policy": "cascade",
                "student": "tiny-textcnn",
                "teacher": "tiny-teacher",
                "threshold": default,
                "thresholds": {"negative": neg_threshold},
            }
        }
    }
    expected = [i for i in range(len(TEXTS)) if score[i] < (neg_threshold if labels[top[i]] == "negative" else default)]
    only_default = [i for i in range(len(TEXTS)) if score[i] < default]
    assert 0 < len(expected) < len(TEXTS) and expected != only_default  # the per-label threshold matters

    router = Router(models, config)
    infer = RealInfer(bundles)
    answer = asyncio.run(router.classify(TEXTS, None, None, infer))
    assert answer.route == "default"
    assert [i for i, a in enumerate(answer.answers) if a.escalated] == expected
    assert [a.model for a in answer.answers] == [
        "tiny-teacher" if i in expected else "tiny-textcnn" for i in range(len(TEXTS))
    ]
    # one teacher call with exactly the escalated subset, in input order
    assert infer.calls == [("tiny-textcnn", TEXTS), ("tiny-teacher", [TEXTS[i] for i in expected])]
    teacher = np.stack([probs(bundles, "tiny-teacher", [TEXTS[i]])[0] for i in expected])
    np.testing.assert_allclose(np.stack([answer.answers[i].probabilities for i in expected]), teacher, atol=1e-6)
    # each answer carries the metadata of the model that produced it, not of the route
    for i, text_answer in enumerate(answer.answers):
        bundle = bundles[text_answer.model]
        assert text_answer.checksum == bundle.manifest.checksum and text_answer.checksum
        assert text_answer.labels == list(bundle.manifest.labels)
        np.testing.assert_allclose(text_answer.logits, bundle.predict([TEXTS[i]])[0], atol=1e-5)
    kept = [i for i in range(len(TEXTS)) if i not in expected]
    np.testing.assert_array_equal(np.stack([answer.answers[i].probabilities for i in kept]), student[kept])
    assert metric(router, "kdserve_cascade_escalations_total", route="default") == len(expected)
    assert metric(router, "kdserve_cascade_texts_total", route="default") == len(TEXTS)


def test_cascade_extremes_and_teacher_failure(bundles: dict, models: dict) -> None:
    route = {"policy": "cascade", "student": "tiny-textcnn", "teacher": "tiny-teacher", "threshold": 0.0}
    router = Router(models, {"routes": {"c": route}})
    infer = RealInfer(bundles)
    answer = asyncio.run(router.classify(TEXTS, "c", None, infer))
    assert not any(a.escalated for a in answer.answers) and infer.calls == [("tiny-textcnn", TEXTS)]
    router.update({"routes": {"c": {**route, "threshold": 1.0}}})
    failing = RealInfer(bundles, fail=("tiny-teacher",))
    with pytest.raises(Boom, match="tiny-teacher is down"):
        asyncio.run(router.classify(TEXTS[:3], "c", None, failing))
    assert metric(router, "kdserve_cascade_escalations_total", route="c") == 3


def test_primary_errors_propagate_unchanged(bundles: dict, models: dict) -> None:
    router = Router(models)
    with pytest.raises(Boom, match="tiny-bilstm is down"):
        asyncio.run(router.classify(TEXTS[:1], None, None, RealInfer(bundles, fail=("tiny-bilstm",))))


# ---------------------------------------------------------------- shadow


def shadow_router(models: dict, **kw: object) -> Router:
    route = {
        "policy": "shadow",
        "primary": "tiny-textcnn",
        "shadow": kw.pop("shadow", "tiny-bilstm"),
        "sample_rate": kw.pop("sample_rate", 1.0),
    }
    return Router(models, {"routes": {"shadowed": route}}, **kw)  # type: ignore[arg-type]


def test_shadow_samples_the_configured_fraction(bundles: dict, models: dict) -> None:
    router = shadow_router(models, sample_rate=0.25, shadow_max_inflight=10_000, seed=3)
    infer = RealInfer(bundles)

    async def main() -> list[bool]:
        flags = [
            (await router.classify(TEXTS[i % 10 : i % 10 + 1], "shadowed", None, infer)).shadowed for i in range(1000)
        ]
        await router.aclose(timeout=30)
        return flags

    flags = asyncio.run(main())
    assert abs(sum(flags) / 1000 - 0.25) <= 0.04
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == sum(flags)
    assert sum(1 for model, _ in infer.calls if model == "tiny-bilstm") == sum(flags)
    for rate, expected in ((0.0, 0), (1.0, 50)):
        other = shadow_router(models, sample_rate=rate)
        assert sum(asyncio.run(other.classify(["a"], "shadowed", None, infer)).shadowed for _ in range(50)) == expected


def test_shadow_agreement_metrics(bundles: dict, models: dict) -> None:
    router = shadow_router(models)
    primary, shadow = probs(bundles, "tiny-textcnn", TEXTS), probs(bundles, "tiny-bilstm", TEXTS)

    async def main() -> RoutedAnswer:
        answer = await router.classify(TEXTS, "shadowed", None, RealInfer(bundles))
        await router.aclose(timeout=30)
        return answer

    answer = asyncio.run(main())
    assert answer.shadowed and [a.model for a in answer.answers] == ["tiny-textcnn"] * len(TEXTS)
    top = primary.argmax(axis=1)
    agreed = int((top == shadow.argmax(axis=1)).sum())
    assert 0 < agreed < len(TEXTS)
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == len(TEXTS)
    assert metric(router, "kdserve_shadow_agreed_total", route="shadowed") == agreed
    diffs = np.abs(primary[np.arange(len(TEXTS)), top] - shadow[np.arange(len(TEXTS)), top])
    assert metric(router, "kdserve_shadow_score_difference_count", route="shadowed") == len(TEXTS)
    assert metric(router, "kdserve_shadow_score_difference_sum", route="shadowed") == pytest.approx(diffs.sum(), 1e-5)
    assert metric(router, "kdserve_shadow_score_difference_bucket", route="shadowed", le="0.1") == (diffs <= 0.1).sum()


def test_shadow_never_delays_the_answer(bundles: dict, models: dict) -> None:
    router = shadow_router(models)
    infer = RealInfer(bundles)

    async def main() -> None:
        infer.gates["tiny-bilstm"] = asyncio.Event()  # the shadow model hangs until released
        answer = await asyncio.wait_for(router.classify(TEXTS[:4], "shadowed", None, infer), timeout=5)
        assert answer.shadowed and [a.model for a in answer.answers] == ["tiny-textcnn"] * 4
        await asyncio.sleep(0.05)
        assert router.shadow.inflight == 1
        assert metric(router, "kdserve_shadow_inflight") == 1
        assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == 0
        infer.gates["tiny-bilstm"].set()
        await router.aclose(timeout=30)
        assert router.shadow.inflight == 0

    asyncio.run(main())
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == 4


def test_shadow_dropped_under_load_then_recovers(bundles: dict, models: dict) -> None:
    router = shadow_router(models, shadow_max_inflight=2)
    infer = RealInfer(bundles)

    async def main() -> None:
        gate = infer.gates["tiny-bilstm"] = asyncio.Event()
        flags = [(await router.classify(TEXTS[:2], "shadowed", None, infer)).shadowed for _ in range(5)]
        assert flags == [True, True, False, False, False]
        assert metric(router, "kdserve_shadow_dropped_total", route="shadowed") == 6  # texts
        gate.set()
        await router.shadow.drain(timeout=30)
        assert (await router.classify(TEXTS[:2], "shadowed", None, infer)).shadowed
        await router.aclose(timeout=30)

    asyncio.run(main())
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == 6
    assert metric(router, "kdserve_shadow_dropped_total", route="shadowed") == 6


def test_shadow_failure_is_counted_not_raised(bundles: dict, models: dict, caplog: pytest.LogCaptureFixture) -> None:
    router = shadow_router(models)

    async def main() -> RoutedAnswer:
        answer = await router.classify(TEXTS[:3], "shadowed", None, RealInfer(bundles, fail=("tiny-bilstm",)))
        await router.aclose(timeout=30)
        return answer

    with caplog.at_level(logging.WARNING, logger="kdserve.serve.shadow"):
        answer = asyncio.run(main())
    assert answer.shadowed and len(answer.answers) == 3
    assert metric(router, "kdserve_shadow_failed_total", route="shadowed") == 3
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == 0
    assert "shadow call to 'tiny-bilstm' on route 'shadowed' failed: tiny-bilstm is down" in caplog.text


def test_aclose_cancels_hung_shadow_calls(bundles: dict, models: dict, tmp_path: Path) -> None:
    router = shadow_router(models, shadow_log=tmp_path / "d.jsonl")
    infer = RealInfer(bundles)

    async def main() -> None:
        infer.gates["tiny-bilstm"] = asyncio.Event()  # never set
        await router.classify(TEXTS[:2], "shadowed", None, infer)
        await asyncio.sleep(0.01)
        await asyncio.wait_for(router.aclose(timeout=0.05), timeout=5)
        assert router.shadow.inflight == 0

    asyncio.run(main())
    assert metric(router, "kdserve_shadow_failed_total", route="shadowed") == 0
    router.shadow.log.write([{"late": 1}])  # type: ignore[union-attr]  # a closed log ignores late writes
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize("log_texts", [False, True])
def test_disagreements_jsonl(bundles: dict, models: dict, tmp_path: Path, log_texts: bool) -> None:
    log = tmp_path / "logs" / "disagreements.jsonl"
    router = shadow_router(models, shadow="tiny-contrarian", shadow_log=log, log_texts=log_texts)
    texts = TEXTS[:6]

    async def main() -> None:
        await router.classify(texts, "shadowed", None, RealInfer(bundles))
        await router.classify(texts[:1], "tiny-textcnn", None, RealInfer(bundles))  # not a shadow route
        await router.aclose(timeout=30)

    asyncio.run(main())
    # tiny-contrarian is tiny-textcnn with its label names swapped: same numbers, opposite labels,
    # so matching columns by label name makes every text a disagreement.
    p = probs(bundles, "tiny-textcnn", texts)
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(texts)
    for i, record in enumerate(records):
        top = int(p[i].argmax())
        assert record.pop("timestamp").endswith("Z")
        expected = {
            "route": "shadowed",
            "primary_model": "tiny-textcnn",
            "shadow_model": "tiny-contrarian",
            "primary_label": ["negative", "positive"][top],
            "shadow_label": ["negative", "positive"][1 - top],
            "primary_scores": {"negative": round(float(p[i, 0]), 6), "positive": round(float(p[i, 1]), 6)},
            "shadow_scores": {"positive": round(float(p[i, 0]), 6), "negative": round(float(p[i, 1]), 6)},
            "score_difference": round(float(abs(p[i, top] - p[i, 1 - top])), 6),
            "text_sha256": hashlib.sha256(texts[i].encode()).hexdigest(),
        }
        if log_texts:
            expected["text"] = texts[i]
        assert record == expected
    assert metric(router, "kdserve_shadow_agreed_total", route="shadowed") == 0
    assert metric(router, "kdserve_shadow_compared_total", route="shadowed") == len(texts)
    assert router.describe()["shadow"] == {"inflight": 0, "max_inflight": 8, "log": str(log), "log_texts": log_texts}


# ---------------------------------------------------------------- validation


LABELS2 = ["negative", "positive"]
VALIDATION_MODELS = {
    "s1": ModelInfo("s1", "student", LABELS2),
    "s2": ModelInfo("s2", "student", LABELS2),
    "t": ModelInfo("t", "teacher", LABELS2),
    "s3": ModelInfo("s3", "student", ["a", "b", "c"]),
}
CASCADE = {"policy": "cascade", "student": "s1", "teacher": "t", "threshold": 0.9}
SHADOW = {"policy": "shadow", "primary": "s1", "shadow": "t", "sample_rate": 0.2}
BAD_ROUTES = [
    (
        {"policy": "roundrobin", "model": "s1"},
        "route 'r', field 'policy': unknown policy 'roundrobin' (expected one of: ab, cascade, fixed, shadow)",
    ),
    ({"model": "s1"}, "route 'r', field 'policy': missing (expected one of: ab, cascade, fixed, shadow)"),
    ({"policy": "fixed", "model": "s1", "weight": 1}, "route 'r', field 'weight': unknown field"),
    ({"policy": "fixed"}, "route 'r', field 'model': field required"),
    ({**SHADOW, "sample_rate": "0.5"}, "route 'r', field 'sample_rate': input should be a valid number"),
    ({"policy": "fixed", "model": "nope"}, "route 'r', field 'model': unknown model 'nope' (models: s1, s2, s3, t)"),
    (
        {"policy": "ab", "variants": {"s1": 1, "gpt": 1}},
        "route 'r', field 'variants': unknown model 'gpt' (models: s1, s2, s3, t)",
    ),
    (
        {"policy": "ab", "variants": {"s1": 1, "s2": 0}},
        "route 'r', field 'variants': weight of 's2' must be a positive finite number, got 0.0",
    ),
    (
        {"policy": "ab", "variants": {"s1": -1}},
        "route 'r', field 'variants': weight of 's1' must be a positive finite number, got -1.0",
    ),
    (
        {"policy": "ab", "variants": {"s1": float("inf")}},
        "route 'r', field 'variants': weight of 's1' must be a positive finite number, got inf",
    ),
    ({"policy": "ab", "variants": {}}, "route 'r', field 'variants': needs at least one variant"),
    ({**SHADOW, "sample_rate": 1.5}, "route 'r', field 'sample_rate': must be within [0, 1], got 1.5"),
    ({**SHADOW, "sample_rate": float("nan")}, "route 'r', field 'sample_rate': must be within [0, 1], got nan"),
    ({**SHADOW, "shadow": "s1"}, "route 'r', field 'shadow': must differ from the primary 's1'"),
    (
        {**SHADOW, "shadow": "s3"},
        "route 'r', fields 'primary'/'shadow': labels of 's1' ['negative', 'positive'] "
        "differ from labels of 's3' ['a', 'b', 'c']",
    ),
    (
        {**CASCADE, "teacher": "s3"},
        "route 'r', fields 'student'/'teacher': labels of 's1' ['negative', 'positive'] "
        "differ from labels of 's3' ['a', 'b', 'c']",
    ),
    ({**CASCADE, "teacher": "x"}, "route 'r', field 'teacher': unknown model 'x' (models: s1, s2, s3, t)"),
    ({**CASCADE, "threshold": 1.2}, "route 'r', field 'threshold': must be within [0, 1], got 1.2"),
    (
        {**CASCADE, "thresholds": {"negative": -0.1}},
        "route 'r', field 'thresholds': threshold of 'negative' must be within [0, 1], got -0.1",
    ),
    (
        {**CASCADE, "thresholds": {"neutral": 0.5}},
        "route 'r', field 'thresholds': 'neutral' is not a label of 's1' (labels: negative, positive)",
    ),
    (
        {"policy": "cascade", "student": "s1", "teacher": "t", "thresholds": {"negative": 0.5}},
        "route 'r', field 'threshold': required as the default for labels without their own threshold (positive)",
    ),
    ("s1", "route 'r': expected an object with a 'policy', got str"),
]


@pytest.mark.parametrize(("route", "message"), BAD_ROUTES)
def test_validation_messages(route: object, message: str) -> None:
    with pytest.raises(RoutingError) as info:
        Router(VALIDATION_MODELS, {"routes": {"r": route}})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"routes": {"s1": {"policy": "fixed", "model": "s2"}}},
            "route 's1': is the name of a model, so it must be a fixed route to that model (it would hide the model)",
        ),
        (
            {"routes": {"t": CASCADE}},
            "route 't': is the name of a model, so it must be a fixed route to that model (it would hide the model)",
        ),
        ({"route": {}}, "routing config: unknown field(s) 'route' (expected 'routes')"),
        ({"routes": []}, "routing config: 'routes' must be an object of route name -> route, got list"),
        ({"routes": {"": {"policy": "fixed", "model": "s1"}}}, "route names must be non-empty strings, got ''"),
    ],
)
def test_config_level_messages(config: dict, message: str) -> None:
    with pytest.raises(RoutingError) as info:
        Router(VALIDATION_MODELS, config)
    assert str(info.value) == message


def test_valid_config_and_model_info_checks() -> None:
    config = {
        "routes": {
            "s1": {"policy": "fixed", "model": "s1"},
            "r": {**CASCADE, "thresholds": {"negative": 1}},
            "sh": {**SHADOW, "sample_rate": 0},
            "ab": {"policy": "ab", "variants": {"s1": 3}},
        }
    }
    described = Router(VALIDATION_MODELS, config).describe()
    assert described["routes"]["r"] == {
        "policy": "cascade",
        "student": "s1",
        "teacher": "t",
        "threshold": 0.9,
        "thresholds": {"negative": 1.0},
        "source": "config",
    }
    assert described["config"] == config and json.loads(json.dumps(described)) == described
    with pytest.raises(RoutingError, match=r"^model 'm': role must be one of teacher, student, got 'judge'$"):
        ModelInfo("m", "judge", LABELS2)
    with pytest.raises(RoutingError, match=r"^model 'm': needs at least two distinct labels, got \['a', 'a'\]$"):
        ModelInfo("m", "student", ["a", "a"])


def test_update_is_atomic(bundles: dict, models: dict) -> None:
    router = Router(models, {"routes": {"fast": {"policy": "fixed", "model": "tiny-textcnn"}}})
    before = router.describe()
    bad = {
        "routes": {
            "fast": {"policy": "fixed", "model": "tiny-bilstm"},  # valid on its own
            "broken": {"policy": "shadow", "primary": "tiny-bilstm", "shadow": "tiny-teacher", "sample_rate": 2},
        }
    }
    with pytest.raises(RoutingError, match="route 'broken', field 'sample_rate'"):
        router.update(bad)
    assert router.describe() == before
    answer = asyncio.run(router.classify(TEXTS[:1], "fast", None, RealInfer(bundles)))
    assert answer.answers[0].model == "tiny-textcnn"
    router.update({"routes": {"fast": {"policy": "fixed", "model": "tiny-bilstm"}}})
    assert asyncio.run(router.classify(TEXTS[:1], "fast", None, RealInfer(bundles))).answers[0].model == "tiny-bilstm"


def test_set_models_revalidates(models: dict) -> None:
    config = {"routes": {"fast": {"policy": "fixed", "model": "tiny-textcnn"}}}
    router = Router(models, config)
    before = router.describe()
    without = {k: v for k, v in models.items() if k != "tiny-textcnn"}
    with pytest.raises(RoutingError, match=r"^route 'fast', field 'model': unknown model 'tiny-textcnn'"):
        router.set_models(without)
    assert router.describe() == before
    router.set_models({**models, "a-student": ModelInfo("a-student", "student", ["positive", "negative"])})
    routes = router.describe()["routes"]
    assert routes["default"]["model"] == routes["student"]["model"] == "a-student"
    assert routes["fast"]["model"] == "tiny-textcnn"


def test_from_file(models: dict, tmp_path: Path) -> None:
    config = {"routes": {"fast": {"policy": "fixed", "model": "tiny-textcnn"}}}
    (tmp_path / "r.json").write_text(json.dumps(config))
    assert Router.from_file(tmp_path / "r.json", models).describe()["config"] == config
    yaml = pytest.importorskip("yaml")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(config))
    assert Router.from_file(tmp_path / "r.yaml", models, seed=1).describe()["config"] == config
    (tmp_path / "bad.json").write_text('{"routes": ')
    with pytest.raises(RoutingError, match=r"bad\.json: invalid JSON \(Expecting value: line 1 column 12"):
        Router.from_file(tmp_path / "bad.json", models)
    (tmp_path / "bad.yml").write_text("routes: [unclosed")
    with pytest.raises(RoutingError, match=r"bad\.yml: invalid YAML"):
        load_config(tmp_path / "bad.yml")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(RoutingError, match=r"list\.json: expected an object with 'routes', got list"):
        Router.from_file(tmp_path / "list.json", models)
    (tmp_path / "wrong.json").write_text(json.dumps({"routes": {"fast": {"policy": "fixed", "model": "x"}}}))
    with pytest.raises(RoutingError, match=r"wrong\.json: route 'fast', field 'model': unknown model 'x'"):
        Router.from_file(tmp_path / "wrong.json", models)
    with pytest.raises(RoutingError, match=r"missing\.json: cannot read the routing file"):
        Router.from_file(tmp_path / "missing.json", models)


def test_metrics_go_to_the_given_registry(models: dict) -> None:
    registry = prom.CollectorRegistry()
    router = Router(models, registry=registry)
    assert router.registry is registry
    assert registry.get_sample_value("kdserve_shadow_inflight") == 0
    with pytest.raises(RoutingError, match="shadow_max_inflight must be >= 0, got -1"):
        Router(models, shadow_max_inflight=-1)


def test_imports_without_torch_or_fastapi() -> None:
    code = (
        "import sys\nfor m in ('torch', 'fastapi', 'transformers'): sys.modules[m] = None\n"
        "import kdserve.serve.routing, kdserve.serve.shadow, kdserve.serve.routing_config\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
