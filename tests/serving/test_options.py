"""The settings layer: flags, environment, defaults, help, and the commands built on it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from visionpool.proxy.settings import ProxySettings
from visionpool.serving.commands import build_parser, installed
from visionpool.serving.options import add_arguments, from_args, option, to_environ
from visionpool.worker.settings import WorkerSettings

SERVICES = [pytest.param(WorkerSettings, id="worker"), pytest.param(ProxySettings, id="proxy")]


def parse(cls: type, argv: list[str], environ: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return from_args(cls, parser.parse_args(argv), environ or {})


def test_a_flag_beats_the_environment_which_beats_the_default() -> None:
    assert parse(WorkerSettings, []).threads == 32
    assert parse(WorkerSettings, [], {"VISIONPOOL_THREADS": "8"}).threads == 8
    assert parse(WorkerSettings, ["--threads", "4"], {"VISIONPOOL_THREADS": "8"}).threads == 4
    assert parse(WorkerSettings, [], {"VISIONPOOL_THREADS": ""}).threads == 32  # empty means unset


def test_lists_booleans_paths_and_secrets() -> None:
    settings = parse(
        WorkerSettings,
        ["--no-supervise"],
        {
            "VISIONPOOL_MODEL": "a, b",
            "VISIONPOOL_SUPERVISE": "yes",
            "VISIONPOOL_MODEL_REPOSITORY": "/srv/models",
            "VISIONPOOL_REGISTRY_TOKEN": "s3cret",
        },
    )
    assert settings.models == ["a", "b"] and settings.supervise is False
    assert settings.model_repository == Path("/srv/models") and settings.registry_token == "s3cret"
    assert parse(WorkerSettings, ["--model", "x", "y", "--supervise"]).models == ["x", "y"]


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="VISIONPOOL_THREADS='many' is not a valid int"):
        parse(WorkerSettings, [], {"VISIONPOOL_THREADS": "many"})


def test_the_proxy_has_its_own_address_variables() -> None:
    environ = {"VISIONPOOL_PORT": "5100", "VISIONPOOL_PROXY_PORT": "9090", "VISIONPOOL_HOST": "10.0.0.1"}
    proxy, worker = parse(ProxySettings, [], environ), parse(WorkerSettings, [], environ)
    assert proxy.address == ("127.0.0.1", 9090) and worker.address == ("10.0.0.1", 5100)
    assert parse(ProxySettings, []).port == 8080


def test_a_worker_takes_honchos_port_only_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "5123")
    assert parse(WorkerSettings, []).port == 5123
    assert parse(WorkerSettings, [], {"VISIONPOOL_PORT": "6000"}).port == 6000
    assert parse(ProxySettings, []).port == 8080  # the pool's address stays put
    monkeypatch.delenv("PORT")
    assert parse(WorkerSettings, []).port == 8000


def test_the_registry_defaults_differ_by_service_and_bad_values_say_what_to_pass() -> None:
    assert parse(WorkerSettings, []).registry == "none" and parse(ProxySettings, []).registry == "local"
    with pytest.raises(ValueError, match="unknown registry 'none'; choose one of local, consul"):
        parse(ProxySettings, ["--registry", "none"])
    with pytest.raises(ValueError, match="port must be between 0 and 65535"):
        parse(WorkerSettings, ["--port", "70000"])
    with pytest.raises(ValueError, match="log_level must be DEBUG, INFO, WARNING or ERROR"):
        parse(ProxySettings, ["--log-level", "loud"])


@pytest.mark.parametrize("cls", SERVICES)
def test_settings_survive_the_trip_through_the_environment(cls: type) -> None:
    """What the supervisor relies on to restart a worker with exactly its settings."""
    argv = ["--port", "5201", "--registry", "consul", "--consul-token", "t", "--log-format", "json"]
    if cls is WorkerSettings:
        argv += ["--model", "a", "b", "--max-body-bytes", "1000", "--request-timeout", "2.5", "--supervise"]
    settings = parse(cls, argv)
    assert parse(cls, [], to_environ(settings)) == settings


@pytest.mark.parametrize("cls", SERVICES)
def test_every_option_has_help_inherited_ones_included(cls: type) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    actions = [a for a in parser._actions if a.dest != "help"]
    assert {a.dest for a in actions} == {f.name for f in dataclasses.fields(cls)}
    for action in actions:
        text = (action.help or "").split(" [env ")[0]
        assert len(text) > 15, f"{action.option_strings} has no help"
        assert "VISIONPOOL_" in (action.help or "")
    shown = parser.format_help()
    for flag in ("--registry-token-file", "--consul-url", "--log-format", "--host"):
        assert flag in shown


def test_an_option_without_help_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a help text"):

        @dataclasses.dataclass
        class Bad:
            size: int = option(3)


def test_the_command_lists_every_subcommand_and_each_has_its_help() -> None:
    commands = {command.name: command for command in installed()}
    assert set(commands) == {"worker", "import", "proxy", "keys", "predict", "lookup", "workers", "bench", "chaos"}
    help_text = build_parser(list(commands.values())).format_help()
    assert all(name in help_text for name in commands)
    worker_help = argparse.ArgumentParser()
    commands["worker"].add_arguments(worker_help)
    assert "--registry-url" in worker_help.format_help()


def test_a_bad_setting_is_one_clean_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    worker = next(command for command in installed() if command.name == "worker")
    assert worker.main(["--threads", "0"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == "visionpool worker: threads must be at least 1, got 0"


def test_every_subcommand_declares_its_options_through_the_settings_layer() -> None:
    """No option is declared by hand: each comes from a settings field, with its help as data."""
    for command in installed():
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        declared = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert declared and all(a.help and a.help[0].isupper() for a in declared), command.name
        assert {a.dest for a in declared} == {f.name for f in dataclasses.fields(command.settings)}, command.name
