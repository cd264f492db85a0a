"""routerd.shell.config_file: loading files by extension, default locations, path resolution."""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import msgspec.inspect as mi
import pytest

from routerd.core.config import Config, ConfigError, default_config, parse_config
from routerd.shell.config_file import find_default_config, load_config_file

ROOT = pathlib.Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
EXAMPLE = ROOT / "packaging" / "config.example.toml"


def test_seed_yaml_file_loads_and_relative_paths_follow_the_file() -> None:
    cfg = load_config_file(DATA / "seed-config.yaml", {"WORKSPACE_ROOT": "/srv/p"})
    assert cfg.serena.workspace == "/srv/p"
    assert cfg.security.audit_log_path == str(DATA / "llm-router-audit.log")
    assert cfg.services.custom_endpoints[0].name == "internal-gpu-server"


def test_seed_toml_file_loads_like_the_yaml_file() -> None:
    env = {"WORKSPACE_ROOT": "/srv/p"}
    assert load_config_file(DATA / "seed-config.toml", env) == load_config_file(
        DATA / "seed-config.yaml", env
    )


def test_yml_extension_and_upper_case_extension(tmp_path: pathlib.Path) -> None:
    for name in ("c.yml", "c.YAML"):
        p = tmp_path / name
        p.write_text("daemon:\n  log_level: debug\n", encoding="utf-8")
        assert load_config_file(p, {}).daemon.log_level == "debug"


def test_example_config_loads(tmp_path: pathlib.Path) -> None:
    cfg = load_config_file(EXAMPLE, {"HOME": "/home/u"})
    assert cfg.serena.workspace == "/home/u/src"
    assert cfg.services.localai.enabled is False
    assert cfg.task_routing.analysis.require_serena is True
    cfg = load_config_file(EXAMPLE, {"HOME": "/home/u", "WORKSPACE_ROOT": "/w"})
    assert cfg.serena.workspace == "/w"


def test_example_config_documents_the_defaults_it_sets() -> None:
    cfg = load_config_file(EXAMPLE, {"HOME": "/home/u"})
    defaults = default_config()
    assert cfg.daemon == defaults.daemon
    assert cfg.context == defaults.context
    assert cfg.security == defaults.security


def test_process_environment_is_the_default_env(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[serena]\nworkspace = "${ROUTERD_TEST_WS}"\n', encoding="utf-8")
    monkeypatch.setenv("ROUTERD_TEST_WS", "/from/env")
    assert load_config_file(p).serena.workspace == "/from/env"


def test_unknown_extension_lists_allowed_ones(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "config.json"
    p.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(p, {})
    err = info.value
    assert err.source == str(p)
    assert err.path is None
    assert "'.json'" in err.message
    assert ".toml, .yaml, .yml" in err.message


def test_missing_file_gives_os_reason(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config_file(p, {})
    assert str(info.value) == f"{p}: cannot read the file: No such file or directory"


def test_directory_gives_os_reason(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "dir.toml"
    d.mkdir()
    with pytest.raises(ConfigError, match="Is a directory"):
        load_config_file(d, {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_gives_os_reason(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("", encoding="utf-8")
    p.chmod(0)
    with pytest.raises(ConfigError, match="Permission denied"):
        load_config_file(p, {})


def test_invalid_utf8_is_reported(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(b"version: '1.0'\nenvironment: \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config_file(p, {})


def test_utf8_bom_is_accepted(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xef\xbb\xbf" + b'version = "1.0"\n')
    assert load_config_file(p, {}) == default_config()


def test_errors_inside_the_file_carry_its_name(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[security]\nallowed_hosts = ['localhost', 'nope/99']\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(p, {})
    assert info.value.source == str(p)
    assert str(info.value).startswith(f"{p}: $.security.allowed_hosts[1]: invalid CIDR")


# --- find_default_config ------------------------------------------------------------------------


def _touch(p: pathlib.Path) -> pathlib.Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("", encoding="utf-8")
    return p


def test_routerd_config_variable_wins_even_if_missing(tmp_path: pathlib.Path) -> None:
    _touch(tmp_path / "xdg" / "routerd" / "config.toml")
    env = {
        "ROUTERD_CONFIG": str(tmp_path / "missing.toml"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    assert find_default_config(env, system_dirs=()) == tmp_path / "missing.toml"


def test_xdg_then_system(tmp_path: pathlib.Path) -> None:
    system = tmp_path / "etc"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert find_default_config(env, system_dirs=[system]) is None
    etc_file = _touch(system / "config.yaml")
    assert find_default_config(env, system_dirs=[system]) == etc_file
    xdg_file = _touch(tmp_path / "xdg" / "routerd" / "config.toml")
    assert find_default_config(env, system_dirs=[system]) == xdg_file


def test_home_dot_config_when_xdg_unset_or_relative(tmp_path: pathlib.Path) -> None:
    home_file = _touch(tmp_path / "home" / ".config" / "routerd" / "config.yml")
    assert find_default_config({"HOME": str(tmp_path / "home")}, system_dirs=()) == home_file
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "relative/dir"}
    assert find_default_config(env, system_dirs=()) == home_file


def test_two_formats_in_one_directory_is_an_error(tmp_path: pathlib.Path) -> None:
    _touch(tmp_path / "routerd" / "config.toml")
    _touch(tmp_path / "routerd" / "config.yaml")
    with pytest.raises(ConfigError, match=r"both config\.toml and config\.yaml exist"):
        find_default_config({"XDG_CONFIG_HOME": str(tmp_path)}, system_dirs=())


def test_found_default_file_loads(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "xdg" / "routerd" / "config.toml"
    target.parent.mkdir(parents=True)
    shutil.copy(EXAMPLE, target)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": "/home/u"}
    found = find_default_config(env, system_dirs=())
    assert found == target
    assert load_config_file(found, env).services.localai.enabled is False


# --- docs/configuration.md stays true --------------------------------------------------------

DOC = ROOT / "docs" / "configuration.md"


def _blocks(lang: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_doc_examples_load_and_agree() -> None:
    env = {"WORKSPACE_ROOT": "/w"}
    (toml_text,) = _blocks("toml")
    (yaml_text,) = _blocks("yaml")
    from_toml = parse_config(toml_text, fmt="toml", env=env)
    from_yaml = parse_config(yaml_text, fmt="yaml", env=env)
    assert from_toml == from_yaml
    assert from_toml.services.custom_endpoints[0].name == "gpu-box"


def test_doc_names_every_key() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing: list[str] = []

    def walk(info: mi.Type, where: str) -> None:
        if isinstance(info, mi.UnionType):
            for t in info.types:
                walk(t, where)
        elif isinstance(info, (mi.ListType, mi.DictType)):
            walk(info.item_type if isinstance(info, mi.ListType) else info.value_type, where)
        elif isinstance(info, mi.StructType):
            for f in info.fields:
                if f"`{f.encode_name}`" not in text:
                    missing.append(f"{where}.{f.encode_name}")
                walk(f.type, f"{where}.{f.encode_name}")

    walk(mi.type_info(Config), "$")
    assert not missing


def test_doc_port_table_matches_the_service_table() -> None:
    from routerd.core.config import SERVICE_KINDS
    from routerd.core.services import spec_for

    text = DOC.read_text(encoding="utf-8")
    for kind in SERVICE_KINDS:
        row = re.search(rf"^\| `{kind}` +\|[^|]+\| ([0-9, ]+?) +\|", text, flags=re.M)
        assert row is not None, kind
        ports = tuple(int(p) for p in row[1].split(","))
        assert ports == spec_for(kind).ports, kind  # type: ignore[arg-type]


def test_example_config_with_every_commented_setting_enabled_loads(tmp_path: pathlib.Path) -> None:
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True):
        m = re.match(r"# ((?:\[|[a-z_][a-z0-9_]* = ).*\n)", line)
        if m and "(never both)" not in line:  # the alternative to the line before it
            line = m[1]
        lines.append(line)
    p = tmp_path / "all.toml"
    p.write_text("".join(lines), encoding="utf-8")
    cfg = load_config_file(p, {"HOME": "/home/u"})
    assert cfg.daemon.socket_group == "routerd"
    assert cfg.services.custom_endpoints[0].name == "gpu-box"
    assert cfg.models[0].id == "my-finetune-7b"
    assert cfg.serena.workspaces == ["/home/u/src/other-project"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[security]\nallowed_uids = [1001]\n", "$.security.allowed_uids"),
        ("[security]\nallowed_groups = ['dev']\n", "$.security.allowed_groups"),
        ("[[security.clients]]\nuser = 'alice'\nmethods = ['status']\n", "$.security.clients"),
        ("[http]\nunix_socket = '/tmp/h.sock'\n", "$.http.unix_socket"),
        ("[serena]\nworkspaces = ['/p', {path = '/q', uids = [1000]}]\n",
         "$.serena.workspaces[1].uids"),
        ("[[serena.workspaces]]\npath = '/q'\nwritable = true\nwrite_uids = [1000]\n",
         "$.serena.workspaces[0].write_uids"),
    ],
)
def test_unix_only_settings_are_refused_on_windows(
    tmp_path: pathlib.Path, text: str, path: str
) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    load_config_file(p, {}, platform="linux")  # fine where they apply
    with pytest.raises(ConfigError) as err:
        load_config_file(p, {}, platform="win32")
    assert err.value.path == path and "Windows" in err.value.message
    assert str(err.value).startswith(f"{p}: {path}: ")


def test_seed_config_loads_on_windows() -> None:
    env = {"WORKSPACE_ROOT": "/srv/p"}
    assert load_config_file(DATA / "seed-config.yaml", env, platform="win32") == load_config_file(
        DATA / "seed-config.yaml", env, platform="linux"
    )
