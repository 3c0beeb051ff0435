"""The configuration file: every key documented in config.example.yaml, and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streampick.config import SECTIONS, load_config, require_daemon_keys
from streampick.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"


def test_the_example_documents_every_key_and_loads():
    example = yaml.safe_load(EXAMPLE.read_text())
    assert {section: set(keys) for section, keys in example.items()} == \
        {section: set(keys) for section, keys in SECTIONS.items()}
    config = load_config(EXAMPLE)
    assert config["picking"]["floor"] == -6.0 and config["watch"]["observer"] == "inotify"


def test_relative_paths_count_from_the_config_folder(tmp_path):
    (tmp_path / "mics").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("watch: {folder: mics}\noutput: {folder: out}\n")
    config = load_config(path)
    assert config["watch"]["folder"] == str(tmp_path / "mics")
    require_daemon_keys(config)


@pytest.mark.parametrize("text,message", [
    ("watch: {patterns: '*.mrc'}\n", "watch.patterns: expected list"),
    ("watch: {patterns: [1, 2]}\n", "watch.patterns: expected a list of strings"),
    ("picking: {precision: half}\n", "picking.precision: must be one of"),
    ("picking: {dense: 1}\n", "picking.dense: expected bool"),
    ("output: {folder: out}\n", "watch.folder: required"),
    ("- a\n- b\n", "top level must be a mapping"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("*", r"\*")):
        require_daemon_keys(load_config(path))
