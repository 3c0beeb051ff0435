"""The YAML configuration, read once at the CLI edge into plain typed values.

``config.example.yaml`` documents every key.  Unknown keys, wrong types and bad values raise
:class:`~streampick.errors.ConfigError` naming the key (``picking.radius: ...``); library functions never see
the YAML, only the values.  YAML is data only (``yaml.safe_load``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# The model picked with unless the configuration or --model names another: shipped in models/, trained on
# simulated micrographs only (models/README.md says when to use Topaz's general model or fine-tune instead).
DEFAULT_MODEL = "streampick-sim-resnet8-u32"

# σ of the score map's smoothing, as a fraction of the particle diameter, that `streampick train` gives a model
# whose start has none: 1.5 working px with the particle 16 px across, validated on real and simulated sets
# (docs/training.md, Score smoothing; the accuracy benchmark's row (c) uses the same)
DEFAULT_SMOOTHING = 3 / 32

# key: (accepted types, default); None in the types tuple means the key may be null
PICKING_KEYS: dict[str, tuple[tuple, Any]] = {
    "model": ((str,), DEFAULT_MODEL),
    "device": ((str,), "auto"),
    "target_pixel_size": ((int, float, type(None)), None),
    "downsample": ((int, float, type(None)), None),
    "pixel_size": ((int, float, type(None)), None),
    "radius": ((str, int, float, type(None)), None),
    "edge_margin": ((str, int, float), "0"),
    "smoothing": ((str, int, float, type(None)), None),
    "threshold": ((int, float, type(None)), None),
    "floor": ((int, float), -6.0),
    "box_size": ((int, type(None)), None),
    "dense": ((bool,), False),
    "score_stride": ((int,), 2),
    "precision": ((str,), "auto"),
    "batch_size": ((int,), 1),
}
WATCH_KEYS: dict[str, tuple[tuple, Any]] = {
    "folder": ((str,), None),
    "patterns": ((list,), ["*.mrc"]),
    "ignore_patterns": ((list,), [".*", "*~", "*.tmp", "*.part", "*.partial"]),
    "recursive": ((bool,), False),
    "observer": ((str,), "inotify"),
    "poll_interval": ((int, float), 1.0),
    "settle_seconds": ((int, float), 0.5),
    "give_up_seconds": ((int, float), 600.0),
}
OUTPUT_KEYS: dict[str, tuple[tuple, Any]] = {
    "folder": ((str,), None),
    "suffix": ((str,), "autopick"),
    "journal": ((str, type(None)), None),
    "combined_every_s": ((int, float), 10.0),
}
PUBLISH_KEYS: dict[str, tuple[tuple, Any]] = {
    "endpoint": ((str,), "tcp://127.0.0.1:5555"),
    "high_water_mark": ((int,), 1000),
    "stats_interval": ((int, float), 2.0),
    "heartbeat_interval": ((int, float), 1.0),
}
CONTROL_KEYS: dict[str, tuple[tuple, Any]] = {
    "endpoint": ((str,), "tcp://127.0.0.1:5556"),
}
SECURITY_KEYS: dict[str, tuple[tuple, Any]] = {
    "server_secret_key": ((str, type(None)), None),
    "authorized_clients": ((str, type(None)), None),
}
DAEMON_KEYS: dict[str, tuple[tuple, Any]] = {
    "retry_seconds": ((int, float), 30.0),
    "log_file": ((str, type(None)), None),
}
TRAINING_KEYS: dict[str, tuple[tuple, Any]] = {
    "enabled": ((bool,), True),
    "labels_folder": ((str, type(None)), None),
    "auto": ((bool,), True),
    "expected_particles": ((int, float, type(None)), None),
    "particle_diameter": ((int, float, type(None)), None),
    "settle_seconds": ((int, float), 5.0),
    "scan_interval": ((int, float), 2.0),
    "min_micrographs": ((int,), 2),
    "test_fraction": ((int, float), 0.25),
    "objective": ((str,), "ge-binomial"),
    "epochs": ((int,), 5),
    "steps": ((int,), 200),
    "batch_size": ((int,), 256),
    "lr": ((int, float), 2e-4),
    "radius": ((int, float), 3.0),
    "min_ap_gain": ((int, float), 0.0),
    "device": ((str,), "auto"),
    "precision": ((str,), "auto"),
    "threads": ((int,), 1),
    "nice": ((int,), 19),
    "repick": ((bool,), True),
}
EXECUTOR_KEYS: dict[str, tuple[tuple, Any]] = {
    "kind": ((str,), "in-process"),  # or dask; `executor: dask` is short for `executor: {kind: dask}`
}
DASK_KEYS: dict[str, tuple[tuple, Any]] = {
    "scheduler": ((str, type(None)), None),  # join a running cluster: tcp://HOST:8786
    "cluster": ((str, type(None)), None),  # or start one: local | slurm
    "workers": ((int,), 2),  # local: worker processes
    "tasks_per_worker": ((int,), 2),  # tasks in flight per worker
    "batch_size": ((int,), 4),  # micrographs per task at most, only while a backlog waits (new arrivals go alone)
    "live_workers": ((int,), 1),  # workers that take no backlog or re-pick task (when there are more workers)
    "gpu_per_task": ((bool,), False),  # reserve the Dask resource GPU=1 per task
    "connect_timeout": ((int, float), 10.0),
    "allow_insecure_remote": ((bool,), False),  # a tcp:// scheduler outside loopback (no TLS)
    "on_scheduler_loss": ((str,), "wait"),  # or in-process: pick in the daemon until the scheduler returns
    "slurm_queue": ((str, type(None)), None),
    "slurm_account": ((str, type(None)), None),
    "slurm_walltime": ((str,), "12:00:00"),
    "slurm_cores": ((int,), 4),
    "slurm_memory": ((str,), "32GB"),
    "slurm_gpus_per_job": ((int,), 1),
    "slurm_scheduler_host": ((str, type(None)), None),  # where this daemon's scheduler listens for SLURM workers
    "adaptive_minimum": ((int,), 0),
    "adaptive_maximum": ((int,), 4),
}
SECTIONS = {"watch": WATCH_KEYS, "output": OUTPUT_KEYS, "picking": PICKING_KEYS, "training": TRAINING_KEYS,
            "publish": PUBLISH_KEYS, "control": CONTROL_KEYS, "security": SECURITY_KEYS, "daemon": DAEMON_KEYS,
            "executor": EXECUTOR_KEYS, "dask": DASK_KEYS}
REQUIRED = {("watch", "folder"), ("output", "folder")}  # required by 'streampick run' only
CHOICES = {("watch", "observer"): ("inotify", "polling"),
           ("picking", "precision"): ("auto", "float32", "bfloat16"),
           ("training", "precision"): ("auto", "float32", "bfloat16"),
           ("training", "objective"): ("ge-binomial", "ge-kl", "pn", "nnpu"),
           ("executor", "kind"): ("in-process", "dask"),
           ("dask", "cluster"): ("local", "slurm"),
           ("dask", "on_scheduler_loss"): ("wait", "in-process")}
SIGNED_KEYS = {"threshold", "floor"}  # logits: any sign
NON_NEGATIVE_KEYS = {"min_ap_gain", "nice", "slurm_gpus_per_job", "adaptive_minimum", "live_workers"}  # zero allowed


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate a config file; returns {section: {key: value}} with defaults filled in.

    Raises:
        ConfigError: the file is unreadable or not YAML, or a key is unknown, mistyped or out of range.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise ConfigError(f"config {path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: top level must be a mapping of sections")
    if isinstance(raw.get("executor"), str):
        raw["executor"] = {"kind": raw["executor"]}
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config section (known: {', '.join(SECTIONS)})")
    config = {name: validate_section(name, raw.get(name) or {}, keys) for name, keys in SECTIONS.items()}
    check_executor(config)
    return resolve_paths(config, Path(path).resolve().parent)


def check_executor(config: dict[str, dict[str, Any]]) -> None:
    """``executor.kind: dask`` needs exactly one of ``dask.scheduler`` and ``dask.cluster``.

    Raises:
        ConfigError: naming the key.
    """
    dask = config["dask"]
    if config["executor"]["kind"] != "dask":
        return
    if bool(dask["scheduler"]) == bool(dask["cluster"]):
        raise ConfigError("dask.scheduler: with executor: dask give either dask.scheduler (join a running "
                          "cluster) or dask.cluster (local or slurm), not both or neither")
    if dask["adaptive_minimum"] > dask["adaptive_maximum"]:
        raise ConfigError(f"dask.adaptive_minimum: {dask['adaptive_minimum']} is above dask.adaptive_maximum "
                          f"({dask['adaptive_maximum']})")


def default_config() -> dict[str, dict[str, Any]]:
    """Every section with its defaults (what an empty config file gives)."""
    return {name: validate_section(name, {}, keys) for name, keys in SECTIONS.items()}


PATH_KEYS = [("watch", "folder"), ("output", "folder"), ("output", "journal"), ("training", "labels_folder"),
             ("security", "server_secret_key"),
             ("security", "authorized_clients"), ("daemon", "log_file")]


def resolve_paths(config: dict[str, dict[str, Any]], base: Path) -> dict[str, dict[str, Any]]:
    """Make the path-valued keys absolute, relative paths counting from ``base`` (the config's folder)."""
    for section, key in PATH_KEYS:
        value = config[section][key]
        if value:
            config[section][key] = str((base / Path(value).expanduser()).resolve())
    return config


def validate_section(name: str, values: dict, keys: dict[str, tuple[tuple, Any]]) -> dict[str, Any]:
    """Check one section's keys and types; fill in defaults."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: must be a mapping of keys to values")
    out = {}
    for key, value in values.items():
        if key not in keys:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(keys)})")
        types, _ = keys[key]
        # bool is an int in Python; a YAML 'yes' must not pass as a number
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = ", ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"{name}.{key}: expected {names}, got {type(value).__name__} {value!r}")
        out[key] = value
    for key, value in out.items():
        choices = CHOICES.get((name, key))
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{name}.{key}: must be one of {', '.join(choices)}, got {value!r}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{name}.{key}: expected a list of strings, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in SIGNED_KEYS:
            if key in NON_NEGATIVE_KEYS and value < 0:
                raise ConfigError(f"{name}.{key}: must be zero or positive, got {value}")
            if key not in NON_NEGATIVE_KEYS and value <= 0:
                raise ConfigError(f"{name}.{key}: must be positive, got {value}")
        if (name, key) == ("training", "test_fraction") and not 0 < value < 1:
            raise ConfigError(f"{name}.{key}: must be between 0 and 1, got {value}")
    return {key: out.get(key, default) for key, (_, default) in keys.items()}


def require_daemon_keys(config: dict[str, dict[str, Any]]) -> None:
    """Check what ``streampick run`` needs beyond the defaults: the watched and output folders.

    Raises:
        ConfigError: a required key is missing, or the watched folder does not exist.
    """
    for section, key in sorted(REQUIRED):
        if not config[section][key]:
            raise ConfigError(f"{section}.{key}: required")
    folder = Path(config["watch"]["folder"])
    if not folder.is_dir():
        raise ConfigError(f"watch.folder: {folder} is not an existing folder")


def describe(config: dict[str, dict[str, Any]]) -> str:
    """The effective configuration as YAML, for the start-up log."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None).rstrip()
