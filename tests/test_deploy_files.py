"""Deployment files are checked here, since no Docker engine runs on this machine."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema_rs
import pytest
import yaml  # type: ignore[import-untyped]

from mumu.broker.credentials import AuthDir
from mumu.stages.registry import STAGES
from tests.tls_certs import Pki

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
                   "NATS_JS_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"\${{{secret}:\?", text), f"{secret} must come from the environment"


def test_compose_runs_nats_from_the_single_node_config_with_tls() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nats = services["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "./infra/nats/nats-single.conf:/etc/nats/nats.conf:ro" in nats["volumes"]
    assert any(v.endswith(":/etc/nats/tls:ro") for v in nats["volumes"])
    for name in [*STAGES.names(), "gateway", "setup"]:
        env = services[name]["environment"]
        assert env["MUMU_NATS__URL"].startswith("tls://nats:"), name
        ca = env["MUMU_NATS__TLS__CA_FILE"]
        assert any(v.endswith(f":{ca}:ro") for v in services[name]["volumes"]), name


def test_compose_needs_credentials_and_gives_each_service_only_its_own() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert any(v.endswith(":/etc/nats/auth:ro") for v in services["nats"]["volumes"])
    roles = {**{name: name for name in STAGES.names()}, "gateway": "gateway",
             "setup": "operator", "exporter": "exporter", "transcribe-gpu": "transcribe"}
    for service, role in roles.items():
        seeds = [v for v in services[service]["volumes"] if "/creds/" in v]
        assert seeds == [f"${{MUMU_AUTH_DIR}}/creds/{role}.nk:/etc/mumu/nats.nk:ro"], service
        assert services[service]["environment"]["MUMU_NATS__CREDENTIALS"] == "/etc/mumu/nats.nk"


def with_test_certs(conf: Path, pki: Pki, tmp_path: Path) -> Path:
    """``conf`` with its /etc/nats/tls/ files replaced by the test PKI's (same names)."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for name, source in (("ca.pem", pki.ca), ("server.pem", pki.server_cert),
                         ("server-key.pem", pki.server_key)):
        (tls / name).write_bytes(source.read_bytes())
    text = conf.read_text()
    assert text.count("/etc/nats/tls/") >= 3, "TLS files at their deployment paths"
    copy = tmp_path / conf.name
    copy.write_text(text.replace("/etc/nats/tls/", f"{tls}/"))
    assert 'include "auth/auth.conf"' in text, "no anonymous clients: the users are included"
    users = AuthDir(tmp_path / "auth")
    if not users.registry.exists():  # the cluster test copies node 1's users to the others
        users.ensure_services()
        users.render(STAGES.consumers())
    return copy


def nats_config_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "nats-server", "-c", conf, "-t"], capture_output=True, text=True,
        env={**os.environ, "NATS_JS_KEY": "test-key"},
    )


@pytest.mark.parametrize("node", [1, 2, 3])
def test_nats_cluster_configs_are_valid(node: int, pki: Pki, tmp_path: Path) -> None:
    conf = ROOT / "infra" / "nats" / f"nats-{node}.conf"
    result = nats_config_test(with_test_certs(conf, pki, tmp_path))
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "cipher: chachapoly" in text and "cluster {" in text
    # routes: mutual TLS; clients: TLS; monitoring: loopback only
    cluster = text.split("cluster {", 1)[1]
    assert re.search(r"tls \{[^}]*ca_file[^}]*verify: true[^}]*\}", cluster), cluster
    assert re.search(r"^tls \{", text.split("cluster {", 1)[0], re.M)
    assert re.search(r"^http: 127\.0\.0\.1:8222$", text, re.M)
    assert "0.0.0.0:8222" not in text


def test_single_node_nats_config_is_valid_and_needs_its_certificates(
    pki: Pki, tmp_path: Path
) -> None:
    conf = ROOT / "infra" / "nats" / "nats-single.conf"
    result = nats_config_test(with_test_certs(conf, pki, tmp_path))
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert re.search(r"^tls \{", text, re.M) and "jetstream {" in text
    assert re.search(r"^http: 127\.0\.0\.1:8222$", text, re.M)
    # without the certificate files the server does not start (no silent plaintext)
    bare = tmp_path / "without-certificates"
    bare.mkdir()
    (bare / conf.name).write_text(text)
    users = AuthDir(bare / "auth")
    users.ensure_services()
    users.render(STAGES.consumers())
    missing = nats_config_test(bare / conf.name)
    assert missing.returncode != 0
    assert "/etc/nats/tls/server.pem" in missing.stderr + missing.stdout


def test_the_compose_nats_config_is_valid_and_encrypts_its_store_with_a_key_from_the_env(
    pki: Pki, tmp_path: Path
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
    with_certs = with_test_certs(conf, pki, tmp_path)  # its TLS files, as mounted
    checked = subprocess.run([BIN / "nats-server", "-c", with_certs, "-t"], capture_output=True,
                             text=True, env={**env, "NATS_JS_KEY": "k0123"})
    assert checked.returncode == 0, checked.stderr
    unset = subprocess.run([BIN / "nats-server", "-c", with_certs, "-t"], capture_output=True,
                           text=True, env=env)
    assert unset.returncode != 0 and "NATS_JS_KEY" in unset.stderr, "no key: no server"


COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose" / "compose-spec.json"


def compose_errors(document: object) -> list[str]:
    """What the Compose Specification's JSON schema (vendored: no network at test time)
    finds wrong with ``document``."""
    validator = jsonschema_rs.validator_for(json.loads(COMPOSE_SCHEMA.read_text()))
    return [str(error) for error in validator.iter_errors(document)]


@pytest.mark.parametrize("path", ["docker-compose.yml", "infra/compose.broker-port.yml"])
def test_compose_files_follow_the_compose_specification(path: str) -> None:
    document = yaml.safe_load((ROOT / path).read_text())
    assert compose_errors(document) == []
    # the check can fail: a misspelt key and a wrong type are caught
    broken = json.loads(json.dumps(document))
    next(iter(broken["services"].values()))["portz"] = ["4222:4222"]
    assert compose_errors(broken)
    broken = json.loads(json.dumps(document))
    next(iter(broken["services"].values()))["ports"] = [{"published": {"no": 1}}]
    assert compose_errors(broken)


def test_compose_publishes_no_broker_port_by_default() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "ports" not in services["nats"]
    assert "expose" not in services["nats"]
    override = yaml.safe_load((ROOT / "infra" / "compose.broker-port.yml").read_text())
    assert override["services"]["nats"]["ports"] == ["4222:4222"]  # only when asked for


def test_compose_has_a_gpu_profile_running_transcribe_from_the_cuda_image() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    gpu = services["transcribe-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.cuda"
    assert gpu["command"] == ["stage", "transcribe"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert gpu["environment"]["MUMU_TRANSCRIBE__DEVICE"] == "cuda"
    assert "transcribe" in gpu["networks"]["default"]["aliases"]  # scraped as a stage
    # no other service needs the profile: the default `up` runs on the CPU
    assert [name for name, svc in services.items() if "profiles" in svc] == ["transcribe-gpu"]


def test_compose_runs_one_exporter_with_its_own_read_only_credentials() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    exporter = services["exporter"]
    assert exporter["command"][:1] == ["exporter"]
    assert "deploy" not in exporter or exporter["deploy"].get("replicas", 1) == 1


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").removeprefix("**/")
        parts = Path(path).parts
        if any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_state_out_but_not_what_the_images_copy() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for secret in (".env", ".mumu/master-keys", "auth/creds/operator.nk", "tls/server-key.pem",
                   ".git/config", ".venv/bin/python"):
        assert dockerignore_excludes(secret, patterns), secret
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (ROOT / dockerfile).read_text()
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            for source in sources.split():
                assert (ROOT / source).exists(), source
                assert not dockerignore_excludes(source, patterns), (dockerfile, source)
                for file in (ROOT / source).rglob("*") if (ROOT / source).is_dir() else []:
                    if "__pycache__" in file.parts or any(
                            part.endswith(".egg-info") for part in file.parts):
                        continue  # build output of an editable install, not a source
                    assert not dockerignore_excludes(str(file.relative_to(ROOT)), patterns), file
