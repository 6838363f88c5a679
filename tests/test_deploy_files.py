"""Deployment files are checked here, since no Docker engine runs on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from mumu.runtime.metrics import StageMetrics
from mumu.stages.registry import STAGES

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_are_hadolint_clean(dockerfile: str) -> None:
    result = subprocess.run([BIN / "hadolint", ROOT / dockerfile], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^USER ", text, re.M), "runs as a non-root user"
    assert "HEALTHCHECK" in text
    for folder in ("streams", "sql", "schemas"):  # the package's resources must be copied
        assert f"COPY {folder} ./{folder}" in text


def test_cuda_image_is_pinned_to_cuda12_cudnn9() -> None:
    text = (ROOT / "Dockerfile.cuda").read_text()
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d", text)
    # CTranslate2 4.5+ is the one built against cuDNN 9; 4.0-4.4 want cuDNN 8
    assert 'pip install . "ctranslate2>=4.5,<5"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"ctranslate2>=4.5,<5"' in pyproject
    # the stage's readiness (model loaded), not mere liveness
    assert "127.0.0.1:8081/ready" in text.split("HEALTHCHECK", 1)[1]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_llama_cpp_is_built_portable(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    build_stage = text.split(" AS runtime", 1)[0]
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"' in build_stage


def test_compose_runs_every_stage_the_gateway_and_prometheus_without_inline_secrets() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {*STAGES.names(), "gateway", "nats", "postgres", "prometheus"} <= set(services)
    for name in STAGES.names():
        assert services[name]["command"] == ["stage", name]
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("MUMU_MASTER_KEYS", "POSTGRES_PASSWORD", "MUMU_GATEWAY__SESSION_SECRET",
                   "NATS_JS_KEY"):
        assert re.search(rf"\${{{secret}:\?", text), f"{secret} must come from the environment"


@pytest.mark.parametrize("node", [1, 2, 3])
def test_nats_cluster_configs_are_valid(node: int) -> None:
    conf = ROOT / "infra" / "nats" / f"nats-{node}.conf"
    result = subprocess.run(
        [BIN / "nats-server", "-c", conf, "-t"], capture_output=True, text=True,
        env={**os.environ, "NATS_JS_KEY": "test-key"},
    )
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "cipher: chachapoly" in text and "cluster {" in text


def test_the_compose_nats_config_is_valid_and_encrypts_its_store_with_a_key_from_the_env(
) -> None:
    conf = ROOT / "infra" / "nats" / "nats-single.conf"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nats = compose["services"]["nats"]
    assert f"./infra/nats/{conf.name}:/etc/nats/nats.conf:ro" in nats["volumes"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "NATS_JS_KEY" in nats["environment"]
    assert re.search(r"^NATS_JS_KEY=$", (ROOT / "infra" / "compose.env.example").read_text(),
                     re.M)
    text = conf.read_text()
    assert "cipher: chachapoly" in text and "key: $NATS_JS_KEY" in text
    env = {k: v for k, v in os.environ.items() if k != "NATS_JS_KEY"}
    checked = subprocess.run([BIN / "nats-server", "-c", conf, "-t"], capture_output=True,
                             text=True, env={**env, "NATS_JS_KEY": "k0123"})
    assert checked.returncode == 0, checked.stderr
    unset = subprocess.run([BIN / "nats-server", "-c", conf, "-t"], capture_output=True,
                           text=True, env=env)
    assert unset.returncode != 0 and "NATS_JS_KEY" in unset.stderr, "no key: no server"


def test_prometheus_rules_use_metrics_that_exist() -> None:
    rules = yaml.safe_load((ROOT / "infra" / "prometheus" / "rules.yml").read_text())
    families = {m.name for m in StageMetrics("x").registry.collect()}
    counters = {f"{name}_total" for name in families}
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    used = set(re.findall(r"\b(mumu_[a-z_]+?)(?:_bucket)?\b", exprs))
    assert used, "rules refer to mumu metrics"
    assert used <= families | counters, used - families - counters
