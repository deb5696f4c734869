"""docs/deploy.md's instructions, held to what they describe: the commands and snippets it
gives are ones the CLI, the Makefile, the image and the chart take, as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelgate.config import load_settings
from tests.deploy.support import (
    DEPLOY,
    DEPRECATED_ALIASES,
    REPO,
    Container,
    check_config,
    command_words,
    config_in,
    containers_of,
    documents,
    lay_image,
    parse_command,
    patched_environ,
    profile_args,
    secret_sample,
    template,
    workloads,
)

DOC = REPO / "docs" / "deploy.md"
IMAGE_CONFIG = "/etc/labelgate/labelgate.yaml"


def text() -> str:
    return DOC.read_text()


def section(title: str) -> str:
    """The text under the heading ``title`` (any level), up to the next heading of that level
    or above (a ``#`` line inside a code block is a comment, not a heading)."""
    lines, level, fenced = [], 0, False
    for line in text().splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#+) (.*)", line)
        if level and heading and len(heading.group(1)) <= level:
            break
        if level:
            lines.append(line)
        elif heading and heading.group(2).strip() == title:
            level = len(heading.group(1))
    assert level, f"docs/deploy.md has no section {title!r}"
    return "".join(lines)


def code_blocks(source: str, language: str) -> list[str]:
    """Fenced blocks of ``language``, dedented (a block inside a list item is indented)."""
    blocks = []
    for indent, body in re.findall(rf"^( *)```{language}\n(.*?)^\1```", source, re.MULTILINE | re.DOTALL):
        blocks.append("".join(line[len(indent) :] + "\n" for line in body.splitlines()))
    return blocks


# -- commands -------------------------------------------------------------------------------


def test_the_page_names_no_command_alias_that_is_going_away() -> None:
    aliases = "|".join(map(re.escape, DEPRECATED_ALIASES))
    # `labelgate bundle-server ...`, or an argument list that starts with one (the compose
    # services and containers of these names keep them: they are not commands).
    found = re.findall(rf"labelgate ({aliases})\b|args: \[({aliases})\b|command: \[\"?({aliases})\b", text())
    assert not found, found
    for block in code_blocks(text(), "yaml"):
        for item in _yaml_items(block):
            args = item.get("args") if isinstance(item, dict) else None
            if args:
                assert args[0] not in DEPRECATED_ALIASES, args


def _yaml_items(block: str) -> list[Any]:
    loaded = yaml.safe_load(block)
    return loaded if isinstance(loaded, list) else [loaded]


# -- compose: minting tokens from a checkout --------------------------------------------------


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    """``make -n -B``: what make would run, run nothing (nothing here invokes $(MAKE))."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    command = ["make", "--no-print-directory", "-n", "-B", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_compose_users_install_the_package_alone_to_mint_tokens() -> None:
    compose = section("Compose quickstart")
    commands = re.findall(r"`(make [^`]+)`", compose)
    assert commands, "the compose section names no make command to install the CLI with"
    install = shlex.split(commands[0].replace("$PWD", str(REPO)))
    assert install[1:] != ["venv"], "`make venv` builds the Rust extension and the test extras"
    dry = _make(*install[1:])
    assert dry.returncode == 0, dry.stderr  # a target the Makefile has, as written
    # The package, no extras (the recipe is one shell block: the line ends in `;`).
    assert re.search(r"pip install --quiet -e \.(;|\n)", dry.stdout), dry.stdout
    assert "[test" not in dry.stdout and "[bench" not in dry.stdout
    run = _make("run")
    assert run.returncode == 0 and dry.stdout.strip() in run.stdout  # the step `make run` takes


def test_every_make_target_the_page_names_exists() -> None:
    for command in set(re.findall(r"`(make [^`]+)`", text())):
        words = shlex.split(command.replace("$PWD", str(REPO)))
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        result = _make(*targets)
        assert result.returncode == 0, f"{command}: {result.stderr}"


# -- the image on its own ---------------------------------------------------------------------


def _docker_run() -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The page's ``docker run`` line: its mounts (container path: host path), its -e
    variables and the arguments after the image."""
    block = next(b for b in code_blocks(section("The image on its own"), "sh") if "docker run" in b)
    line = next(ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip().startswith("docker run"))
    words = shlex.split(line.replace("$PWD", "/host"))[2:]
    mounts: dict[str, str] = {}
    env: dict[str, str] = {}
    while words[0].startswith("-"):
        flag = words.pop(0)
        if flag in ("-v", "--volume"):
            source, target, *_ = words.pop(0).split(":")
            mounts[target] = source
        elif flag in ("-e", "--env"):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        elif flag in ("--tmpfs", "-p", "--name"):
            words.pop(0)
    image = words.pop(0)
    assert image.startswith("labelgate:"), image
    return mounts, env, words


def _image_container(tmp_path: Path, mounts: dict[str, str], env: dict[str, str]) -> Container:
    """The image's filesystem, each of the page's mounts holding what the page puts in it."""
    lay_image(tmp_path)
    container = Container("image", tmp_path, [], env=dict(env))
    block = next(b for b in code_blocks(section("The image on its own"), "sh") if "docker run" in b)
    for target, source in mounts.items():
        folder = container.host(target)
        folder.mkdir(parents=True, exist_ok=True)
        host_folder = source.removeprefix("/host/")
        # the files the page writes into that host folder (`> secrets/hash.key`)
        for name in re.findall(rf"> {re.escape(host_folder)}/(\S+)", block):
            (folder / name).write_text(secret_sample(name))
    return container


def test_the_pages_docker_run_line_starts_the_image_default_config(tmp_path: Path) -> None:
    mounts, env, args = _docker_run()
    words, params = parse_command(args)
    assert words == ("serve",) and params["check_config"], args
    assert str(params["config"]) == IMAGE_CONFIG  # the image's CMD config, checked as it would run
    container = _image_container(tmp_path, mounts, env)
    result = check_config(container, IMAGE_CONFIG)
    assert result.returncode == 0, result.stderr
    with patched_environ(env):
        settings = load_settings(config_in(container, IMAGE_CONFIG))
    assert settings.auth.jwt is not None
    # The placeholder issuer is replaced: tokens of the identity provider are accepted.
    assert settings.auth.jwt.issuer == env["LABELGATE_AUTH__JWT__ISSUER"] != "https://issuer.example.invalid/"
    assert settings.upstream.address == env["LABELGATE_UPSTREAM__ADDRESS"]


def test_the_page_names_every_file_and_setting_the_image_default_config_needs(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "docker" / "labelgate.yaml").read_text())
    needed = [
        ("masking.hash_key_file", "/etc/labelgate/" + config["masking"]["hash_key_file"]),
        ("auth.jwt.jwks_file", "/etc/labelgate/" + config["auth"]["jwt"]["jwks_file"]),
    ]
    image = section("The image on its own")
    for setting, path in needed:
        assert f"`{path}`" in image and f"`{setting}`" in image, (setting, path)
    assert "LABELGATE_AUTH__JWT__ISSUER" in image
    assert f"`{config['auth']['jwt']['issuer']}`" in image  # says which issuer is the placeholder
    # What the page promises when one is missing: exit 2, naming its setting.
    for setting, path in needed:
        root = tmp_path / setting
        lay_image(root)
        for other_setting, other in needed:
            if other_setting != setting:
                (root / other.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (root / other.lstrip("/")).write_text(secret_sample(Path(other).name))
        result = check_config(Container("bare", root, []), IMAGE_CONFIG)
        assert result.returncode == 2, setting
        assert setting.rpartition(".")[2] in result.stderr and Path(path).name in result.stderr, result.stderr


# -- the audit forwarder example ----------------------------------------------------------------


def _forwarder_snippet() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's audit forwarder container and the claim templates it comes with."""
    blocks = code_blocks(section("Scaling out"), "yaml")
    items = [item for block in blocks for item in _yaml_items(block)]
    container = next(i for i in items if isinstance(i, dict) and i.get("name") == "audit-forwarder")
    claims = [i for i in items if isinstance(i, dict) and "metadata" in i and "spec" in i]
    return container, claims


def _mount_of(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The mount ``path`` is on (the deepest one holding it)."""
    holding = [
        m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert holding, f"{path} is on no mount: the root filesystem is read-only"
    return max(holding, key=lambda m: len(m["mountPath"]))


def test_the_audit_forwarder_example_reads_the_log_read_only_and_writes_its_cursors_elsewhere() -> None:
    container, claims = _forwarder_snippet()
    words, params = parse_command([str(a) for a in container["args"]])
    assert words == ("audit", "forwarder")
    mounts = container["volumeMounts"]
    log_mount = _mount_of(str(params["log_dir"]), mounts)
    state_mount = _mount_of(str(params["state_dir"]), mounts)
    assert log_mount.get("readOnly") is True, "only the audit writer writes the log"
    assert not state_mount.get("readOnly"), "the cursors are written"
    assert state_mount is not log_mount
    # not under the read-only log mount either (a writable folder inside it does not exist)
    assert not str(params["state_dir"]).startswith(log_mount["mountPath"].rstrip("/") + "/")
    assert _mount_of("/tmp", mounts).get("readOnly") is not True

    gateway_pod = next(
        w for w in workloads(documents(template(*profile_args("ha")))) if w["kind"] == "StatefulSet"
    )
    chart_container = containers_of(gateway_pod)[0]
    assert (
        container["securityContext"] == chart_container["securityContext"]
    )  # the chart's, as every container
    # Every volume it mounts is the pod's, or comes with the example.
    pod_volumes = {v["name"] for v in gateway_pod["spec"]["template"]["spec"]["volumes"]}
    pod_volumes |= {t["metadata"]["name"] for t in gateway_pod["spec"]["volumeClaimTemplates"]}
    pod_volumes |= {c["metadata"]["name"] for c in claims}
    assert {m["name"] for m in mounts} <= pod_volumes
    assert log_mount["name"] == "audit-log"
    assert state_mount["name"] in {c["metadata"]["name"] for c in claims}  # kept across restarts
    # The writer's log folder is the one the forwarder follows.
    writer = next(c for c in containers_of(gateway_pod) if c["name"] == "audit-writer")
    assert parse_command(writer["args"])[1]["log_dir"] == params["log_dir"]


@pytest.mark.parametrize("language", ["yaml"])
def test_every_yaml_example_on_the_page_parses(language: str) -> None:
    for block in code_blocks(text(), language):
        yaml.safe_load(block)


def test_command_words_knows_the_command_groups() -> None:
    # the helper the checks above rely on
    assert command_words(["audit", "forwarder", "--log-dir", "x"]) == ("audit", "forwarder")
    assert command_words(["serve", "--config", "x"]) == ("serve",)
    assert command_words(["--help"]) == ()
