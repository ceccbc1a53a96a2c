"""Deployment files: the serve lock, both Dockerfiles (hadolint + structure), the Kubernetes
manifests (schema + consistency with the image) and the deploy guide.

No Docker daemon is needed: hadolint lints, the HEALTHCHECK command runs against a real local
HTTP server, and the slow test rehearses the image's install steps in a throwaway venv.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
DOCKERFILES = {"cpu": REPO / "Dockerfile", "gpu": REPO / "Dockerfile.gpu"}
ALL_DOCKERFILES = [*DOCKERFILES.values(), REPO / "deploy" / "bundles.Dockerfile"]
LOCKS = {"serve": REPO / "requirements" / "serve.lock", "gpu": REPO / "requirements" / "gpu.lock"}
# Never in a serving image: the training stack, and the GPU runtime in the CPU lock.
FORBIDDEN = {"torch", "transformers", "optimum", "optimum-onnx", "datasets", "spacy", "triton"}


# ---------------------------------------------------------------------------- helpers


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{path.name}:{number}: not an exact 'name==version' pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def extra_requirements(extra: str) -> list[Requirement]:
    """The base dependencies plus one extra's, as pyproject.toml states them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"][extra]]]


def dependency_closure(roots: list[Requirement]) -> set[str]:
    """Every distribution that installing ``roots`` pulls in, walked through the installed
    metadata (so it is exact for this platform and Python, which are the lock's)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return names


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def one(steps: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in steps if k == keyword]
    assert len(found) == 1, f"expected exactly one {keyword}, found {found}"
    return found[0]


def tool(name: str) -> str:
    """A console script from this venv (PATH may not include it) or PATH; skip when absent."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install the dev extra)")
    return found


def manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and "kind" in doc, f"{path.name}: not a Kubernetes object"
            assert doc["kind"] not in docs, f"two {doc['kind']} objects"
            docs[doc["kind"]] = doc
    return docs


def server_container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "kdserve")


def exposed_port() -> int:
    return int(one(final_stage(DOCKERFILES["cpu"]), "EXPOSE"))


# ---------------------------------------------------------------------------- the lock


@pytest.mark.parametrize("extra", ["serve", "gpu"])
def test_lock_pins_every_direct_requirement_within_its_range(extra: str) -> None:
    pins = read_lock(LOCKS[extra])
    for req in extra_requirements(extra):
        name = canonicalize_name(req.name)
        assert name in pins, f"{LOCKS[extra].name} misses {name} ({req})"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"


def test_serve_lock_has_no_training_stack_or_gpu_runtime() -> None:
    pins = read_lock(LOCKS["serve"])
    bad = sorted(n for n in pins if n in FORBIDDEN or n.startswith("nvidia-") or n == "onnxruntime-gpu")
    assert not bad, f"serve.lock would put {bad} into the serving image"
    assert "onnxruntime" in pins and "kdserve" not in pins


def test_gpu_lock_is_the_serve_lock_with_onnxruntime_gpu() -> None:
    serve, gpu = read_lock(LOCKS["serve"]), read_lock(LOCKS["gpu"])
    assert "onnxruntime" not in gpu, "onnxruntime and onnxruntime-gpu must never be installed together"
    assert "onnxruntime-gpu" in gpu and not FORBIDDEN & set(gpu)
    shared = {n: v for n, v in gpu.items() if n != "onnxruntime-gpu"}
    assert shared == {n: v for n, v in serve.items() if n != "onnxruntime"}


def _require_serve_installed() -> None:
    missing = [r.name for r in extra_requirements("serve") if installed(r.name) is None]
    if missing:
        pytest.skip(f"the serve extra is not installed here (missing {', '.join(missing)})")


def test_test_venv_runs_the_locked_versions() -> None:
    """CI's venv and the image must hold the same serve stack: otherwise the tests pass on
    versions the image does not ship."""
    _require_serve_installed()
    pins = read_lock(LOCKS["serve"])
    drift = {n: (v, installed(n)) for n, v in pins.items() if installed(n) != v}
    assert not drift, (
        f"installed versions differ from requirements/serve.lock (locked, installed): {drift}; "
        "install with `-c requirements/serve.lock` or rerun scripts/lock-serve.sh"
    )


def test_serve_lock_is_exactly_the_dependency_closure_of_the_serve_extra() -> None:
    _require_serve_installed()
    closure = dependency_closure(extra_requirements("serve"))
    pins = set(read_lock(LOCKS["serve"]))
    assert closure - pins == set(), "the lock misses packages the serve extra pulls in"
    assert pins - closure == set(), "the lock pins packages the serve extra does not need"


# ---------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    # Threshold "style": the strictest, so any finding at all fails.
    run = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_catches_an_unpinned_root_image(tmp_path: Path) -> None:
    """Control: the same invocation does fail on what the Dockerfiles avoid."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\nUSER root\n")
    run = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert {"DL3006", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", run.stdout))


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_runtime_stage_is_non_root_with_a_health_check(kind: str) -> None:
    stage = final_stage(DOCKERFILES[kind])
    user = one(stage, "USER").split(":")[0]
    assert user not in {"root", "0"} and int(user) == 10001
    healthcheck = one(stage, "HEALTHCHECK")
    assert "/health" in healthcheck and "urllib" in healthcheck, "slim images have no curl"
    assert one(stage, "EXPOSE") == "8000"
    entrypoint = json.loads(one(stage, "ENTRYPOINT"))
    assert entrypoint[:2] == ["kdserve", "serve"]
    flags = dict(zip(entrypoint[2::2], entrypoint[3::2], strict=True))
    assert flags["--bundles"] == "/bundles" and flags["--host"] == "0.0.0.0"
    assert flags.get("--device") == ("cuda" if kind == "gpu" else None)


@pytest.mark.parametrize(("kind", "extra"), [("cpu", "serve"), ("gpu", "gpu")])
def test_images_install_only_through_their_lock(kind: str, extra: str) -> None:
    steps = instructions(DOCKERFILES[kind])
    base = steps[0][1] if steps[0][0] == "ARG" else ""
    assert ("python:3.11-slim" if kind == "cpu" else "cudnn-runtime-ubuntu22.04") in base
    assert ("COPY", f"requirements/{extra}.lock /tmp/{extra}.lock") in steps
    runs = [args for keyword, args in steps if keyword == "RUN"]
    installs = [part for args in runs for part in args.split("&&") if "pip install" in part]
    assert len(installs) == 2, installs
    # Either the whole lock without dependency resolution, or the wheel with no index at all.
    assert f"--no-deps -r /tmp/{extra}.lock" in installs[0]
    assert "--no-index" in installs[1] and f'"$1[{extra}]"' in installs[1]
    assert any("pip check" in args for args in runs)
    assert not re.search(r"\btorch\b", " ".join(runs)), "a serving image never installs torch"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_images_copy_every_package_of_the_wheel(kind: str) -> None:
    folders = sorted(
        set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    )
    copies = {args for keyword, args in instructions(DOCKERFILES[kind]) if keyword == "COPY"}
    for folder in folders:
        assert (REPO / folder / "__init__.py").exists()
        assert f"{folder}/ {folder}/" in copies, f"{DOCKERFILES[kind].name} does not COPY {folder}/"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for plain paths: the last matching pattern wins, "!" re-includes."""
    from fnmatch import fnmatch

    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_dockerignore_drops_local_state_but_keeps_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for local in (".venv", ".git", "runs/teacher/model.safetensors", "tests/conftest.py", "kdserve.egg-info"):
        assert _ignored(local, patterns), f"{local} would be sent to the Docker daemon"
    for path in ALL_DOCKERFILES[:2]:
        for keyword, args in instructions(path):
            if keyword == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    source = source.replace("${BUNDLES}", "deploy/bundles")
                    assert not _ignored(source.rstrip("/"), patterns), f"{path.name} copies ignored {source}"
    assert not _ignored("runs/bundles/tiny/model.onnx", patterns), "--build-arg BUNDLES=runs/bundles must work"
    assert (REPO / "deploy" / "bundles" / ".keep").is_file(), "the default BUNDLES folder must exist"


@pytest.fixture()
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A real HTTP server on a free loopback port whose /health status the test sets."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(state["status"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_healthcheck_command_follows_health(kind: str, health_server: tuple[int, dict[str, int]]) -> None:
    port, state = health_server
    command = json.loads(one(final_stage(DOCKERFILES[kind]), "HEALTHCHECK").split(" CMD ", 1)[1])
    assert command[0] == "python"

    def check(on_port: int) -> int:
        env = {**os.environ, "KDSERVE_PORT": str(on_port)}
        return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode

    assert check(port) == 0
    state["status"] = 503
    assert check(port) == 1
    state["status"] = 200
    assert check(port) == 0
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    closed_port = closed.server_address[1]
    closed.server_close()
    assert check(closed_port) == 1


# ---------------------------------------------------------------------------- Kubernetes


def test_manifests_hold_the_expected_objects() -> None:
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Kustomization"}
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("k8s_version", ["1.28.0", "latest"])
def test_manifests_pass_the_kubernetes_schema(k8s_version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    version = kv.latest_version() if k8s_version == "latest" else k8s_version
    for kind, doc in manifests().items():
        if kind != "Kustomization":  # a kustomize file, not an API object
            kv.validate(doc, version, strict=True)
    # Control: strict validation rejects a misspelt field.
    broken = json.loads(json.dumps(manifests()["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)


def test_probes_and_ports_match_the_image() -> None:
    docs = manifests()
    container = server_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": exposed_port()}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "warm-up needs minutes, not seconds"
    env = {e["name"]: e for e in container["env"]}
    assert env["KDSERVE_PORT"]["value"] == str(exposed_port())
    assert "/health" in one(final_stage(DOCKERFILES["cpu"]), "HEALTHCHECK")
    service_port = docs["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] in ports


def test_pod_is_hardened_and_reads_bundles_read_only() -> None:
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = server_container(docs)
    uid = int(one(final_stage(DOCKERFILES["cpu"]), "USER").split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    entrypoint = json.loads(one(final_stage(DOCKERFILES["cpu"]), "ENTRYPOINT"))
    bundles = entrypoint[entrypoint.index("--bundles") + 1]
    assert mounts[bundles]["readOnly"] is True
    assert "/tmp" in mounts, "a read-only root filesystem still needs a writable /tmp"
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    init = {m["name"] for c in pod.get("initContainers", []) for m in c["volumeMounts"]}
    assert mounts[bundles]["name"] in init | {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}


def test_resources_are_bounded_and_threads_follow_the_cpu_limit() -> None:
    container = server_container(manifests())
    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), f"{bound} must set cpu and memory"
    threads = {e["name"]: e for e in container["env"]}["KDSERVE_INTRA_OP_THREADS"]
    ref = threads["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}


def test_shutdown_drains_before_the_grace_period_ends() -> None:
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = server_container(docs)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) > 0
    drain = float({e["name"]: e for e in container["env"]}["KDSERVE_GRACEFUL_TIMEOUT_S"]["value"])
    assert int(command[1]) + drain < pod["terminationGracePeriodSeconds"], "SIGKILL would cut draining short"
    assert docs["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_autoscaler_and_budget_target_the_deployment() -> None:
    docs = manifests()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert hpa["minReplicas"] >= 2, "one replica cannot survive a disruption"
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]


def _settings_env_names() -> set[str] | None:
    """KDSERVE_* names the server's pydantic-settings class reads, or None before it exists."""
    import importlib
    import pkgutil

    import kdserve.serve

    try:
        from pydantic_settings import BaseSettings
    except ImportError:
        return None
    names: set[str] = set()
    for module_info in pkgutil.iter_modules(kdserve.serve.__path__):
        try:
            module = importlib.import_module(f"kdserve.serve.{module_info.name}")
        except Exception:  # noqa: BLE001 - a module still being written is not this test's subject
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings:
                prefix = str(value.model_config.get("env_prefix", ""))
                names |= {(prefix + field).upper() for field in value.model_fields}
    return names or None


def test_env_names_are_server_settings() -> None:
    used = set(
        re.findall(
            r"\bKDSERVE_[A-Z0-9_]+",
            " ".join([p.read_text() for p in DOCKERFILES.values()] + [p.read_text() for p in K8S.glob("*.yaml")]),
        )
    )
    assert {"KDSERVE_PORT", "KDSERVE_INTRA_OP_THREADS", "KDSERVE_ADMIN_TOKEN"} <= used
    known = _settings_env_names()
    if known is None:
        pytest.skip("serve has no pydantic-settings Settings class yet")
    assert used <= known, f"not server settings: {sorted(used - known)}"


# ---------------------------------------------------------------------------- guide


def test_deploy_guide_shows_the_commands_the_files_support() -> None:
    guide = (REPO / "docs" / "DEPLOY.md").read_text()
    assert "docker run" in guide and "-v $PWD/runs/bundles:/bundles:ro -p 8000:8000 kdserve" in guide
    assert "--build-arg BUNDLES=runs/bundles" in guide and "Dockerfile.gpu" in guide
    assert "kubectl apply -k deploy/k8s" in guide and "routing_key" in guide
    assert "kdserve export --format triton" in guide and "scripts/lock-serve.sh" in guide


# ---------------------------------------------------------------------------- slow


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], seconds: float = 90) -> None:
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"server not ready within {seconds} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_install_steps_give_a_torch_free_working_server(tmp_path: Path, tiny_bundles: Path) -> None:
    """The Dockerfile's builder steps and entrypoint, in a fresh venv instead of a container: the
    lock installs without resolution, the wheel with no index (so the lock is complete), pip check
    passes, torch is absent, and the image's ENTRYPOINT serves real bundles: /ready, the
    HEALTHCHECK command, /classify, and a clean exit on SIGTERM. Needs the package index."""
    import signal
    import urllib.request

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=480, cwd=REPO)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    run(*pip, "install", "--no-deps", "-r", str(LOCKS["serve"]))
    run(*pip, "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), ".")
    wheel = next((tmp_path / "dist").glob("kdserve-*.whl"))
    run(*pip, "install", "--no-index", f"{wheel}[serve]")
    run(*pip, "check")
    frozen = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in run(*pip, "freeze", "--all").stdout.splitlines()
        if "==" in line
    }
    for not_locked in ("kdserve", "pip", "setuptools", "wheel"):
        frozen.pop(not_locked, None)
    assert frozen == read_lock(LOCKS["serve"])
    assert subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=60).returncode != 0

    # The image's ENTRYPOINT, with arguments appended as `docker run IMAGE ARGS` would (the
    # last flag wins); the port comes from KDSERVE_PORT as the image's ENV sets it. Run from
    # tmp_path so that the repo's own packages cannot shadow the installed wheel.
    stage = final_stage(DOCKERFILES["cpu"])
    entrypoint = json.loads(one(stage, "ENTRYPOINT"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.update(KDSERVE_PORT=str(port), HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    command = [
        str(venv / "bin" / entrypoint[0]),
        *entrypoint[1:],
        "--bundles",
        str(tiny_bundles),
        "--host",
        "127.0.0.1",
    ]
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_ready(port, server)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; server log:\n{log.read_text()[-3000:]}") from None
        healthcheck = json.loads(one(stage, "HEALTHCHECK").split(" CMD ", 1)[1])
        assert subprocess.run([python, *healthcheck[1:]], env=env, timeout=30).returncode == 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/classify",
            data=json.dumps({"texts": ["the movie was great ."]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
        assert [r["label"] for r in body["results"]] == ["positive"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


# ---------------------------------------------------------------------------- the Grafana dashboard

DASHBOARD = REPO / "deploy" / "grafana" / "kdserve-dashboard.json"
#: a metric name in PromQL (not one spelled as a regex on __name__, checked apart)
_METRIC = re.compile(r"\b(kdserve_[a-z0-9_]*[a-z0-9])\b(\{[^}]*\})?")
_NAME_REGEX = re.compile(r'__name__=~"([^"]+)"')


def exported_series(bundles: Path, routing: Path) -> dict[str, set[str] | None]:
    """Every series name a real server exports -> its label names (None where no sample shows them),
    after traffic through an A/B, a shadow and a cascade route and one refused text."""
    from tests.serve.conftest import ready_client

    with ready_client(bundles, routing_file=routing) as client:
        for route in ("ab", "shadow", "cascade", "tiny-teacher"):
            assert client.post("/classify", json={"texts": ["the film was good .", "dull"], "model": route}).is_success
        assert client.post("/classify", json={"text": "good " * 200, "truncate": False}).status_code == 413
        time.sleep(0.5)  # the shadow call runs in the background
        text = client.get("/metrics").text
    series: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name]
            for n in names:
                series.setdefault(n, None)
        elif line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", line)
            assert match, line
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match[2] or ""))
            series[match[1]] = (series.get(match[1]) or set()) | labels
    return series


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def test_grafana_dashboard_queries_only_what_the_server_exports(tiny_bundles: Path, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    routing = tmp_path / "routing.json"
    routing.write_text(
        json.dumps(
            {
                "routes": {
                    "ab": {"policy": "ab", "variants": {"tiny-bilstm": 0.5, "tiny-textcnn": 0.5}},
                    "shadow": {"policy": "shadow", "primary": "tiny-bilstm", "shadow": "tiny-teacher"},
                    "cascade": {
                        "policy": "cascade",
                        "student": "tiny-bilstm",
                        "teacher": "tiny-teacher",
                        "threshold": 1,
                    },
                }
            }
        )
    )
    exported = exported_series(tiny_bundles, routing)
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    used: set[str] = set()
    for query in queries:
        for regex in _NAME_REGEX.findall(query):
            matched = [n for n in exported if re.fullmatch(regex, n)]
            assert matched, f"{query}: no exported metric matches {regex}"
            used.update(matched)
        plain = _NAME_REGEX.sub("", query)
        found = _METRIC.findall(plain)
        assert found or _NAME_REGEX.search(query), f"{query}: names no kdserve metric"
        labels_here: set[str] = set()
        unseen = False  # a metric without samples here (e.g. shadow_dropped): its labels are unknown
        for name, matchers in found:
            assert name in exported, f"{query}: {name} is not a metric the server exports"
            used.add(name)
            known = exported[name]
            unseen = unseen or known is None
            labels_here |= (known or set()) | ({"le"} if name.endswith("_bucket") else set())
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!]~?", matchers):
                assert known is None or label in known, f"{query}: {name} has no label {label!r} ({sorted(known)})"
        for group in re.findall(r"\bby \(([^)]*)\)", query):
            for label in (g.strip() for g in group.split(",")):
                assert unseen or label in labels_here, f"{query}: grouped by {label!r}, which its metrics do not carry"
    # the families an operator of a teacher/student route needs are all on the dashboard
    for family in (
        "kdserve_model_texts_total",
        "kdserve_batch_inference_seconds_bucket",
        "kdserve_batch_size_sum",
        "kdserve_http_request_duration_seconds_bucket",
        "kdserve_queue_depth",
        "kdserve_rejected_total",
        "kdserve_shadow_agreed_total",
        "kdserve_shadow_compared_total",
        "kdserve_cascade_escalations_total",
        "kdserve_cascade_texts_total",
        "kdserve_ab_assignments_total",
    ):
        assert family in used, f"the dashboard does not chart {family}"


def test_grafana_dashboard_is_importable() -> None:
    """Structure Grafana needs to import it anywhere: a data-source variable every panel uses, unique
    panel ids, panels inside the 24-column grid."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"]), panel["title"]
