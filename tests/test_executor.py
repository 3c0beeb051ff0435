"""The executor seam (issue 8): picks through a real Dask LocalCluster (worker processes, loopback) equal
in-process picks; the worker's model cache; the SLURM cluster's job script; and the config's refusals."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import starfile

from streampick.cli import main
from streampick.config import default_config, load_config
from streampick.errors import ConfigError
from streampick.executor import (
    MODEL_CACHE_SIZE,
    InProcessExecutor,
    ModelRef,
    PickTask,
    cached_model,
    check_scheduler_address,
    executor_from_config,
    loaded_versions,
    slurm_cluster,
)
from streampick.io.coords import read_coordinates
from streampick.pick import Length, PickFailure, PickSettings

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install "
                                                        "'streampick[dask]')")

PICK = ["--target-pixel-size", "8", "--radius", "70A", "--precision", "float32", "-m", "streampick-sim-resnet8-u32"]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """Three simulated 1024² micrographs at 2 Å/px."""
    out = tmp_path_factory.mktemp("sim") / "session"
    assert main(["-q", "simulate", str(out), "--n", "3", "--size", "1024", "--pixel-size", "2", "--seed", "4"]) == 0
    return out


def _mics(session: Path) -> list[str]:
    return sorted(str(p) for p in (session / "micrographs").glob("*.mrc"))


def test_picks_through_a_local_dask_cluster_equal_in_process_picks(session, tmp_path):
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert main(["-q", "pick", *_mics(session), "-o", str(local), *PICK]) == 0
    assert main(["-q", "pick", *_mics(session), "-o", str(dask), *PICK, "--executor", "dask", "--cluster", "local",
                 "--workers", "2"]) == 0
    ours, theirs = read_coordinates(local / "candidates.txt"), read_coordinates(dask / "candidates.txt")
    assert set(ours) == set(theirs) == {"sim_0000", "sim_0001", "sim_0002"}
    for name in ours:
        assert len(ours[name]) == len(theirs[name]) > 0
        np.testing.assert_allclose(ours[name].x, theirs[name].x, atol=0.01)
        np.testing.assert_allclose(ours[name].score, theirs[name].score, atol=1e-3)
    # the combined outputs come in input order whatever order the workers finished in (scores may differ in
    # the last digit: worker processes score with one thread each)
    a, b = starfile.read(local / "picks.star"), starfile.read(dask / "picks.star")
    assert list(a["rlnMicrographName"]) == list(b["rlnMicrographName"])
    np.testing.assert_allclose(a["rlnCoordinateX"], b["rlnCoordinateX"], atol=0.01)


def test_a_micrograph_that_cannot_be_read_fails_alone_on_the_cluster(session, tmp_path):
    broken = tmp_path / "broken.mrc"
    broken.write_bytes(b"not an MRC file at all" * 10)
    out = tmp_path / "out"
    assert main(["-q", "pick", *_mics(session)[:1], str(broken), "-o", str(out), *PICK, "--executor", "dask",
                 "--cluster", "local", "--workers", "1"]) == 0
    assert set(read_coordinates(out / "candidates.txt")) == {"sim_0000"}


def test_bad_files_in_one_task_fail_alone_and_the_rest_of_the_task_is_picked(session, tmp_path):
    good = _mics(session)[0]
    corrupt = tmp_path / "corrupt.mrc"
    corrupt.write_bytes(b"not an MRC file at all" * 10)
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes(Path(good).read_bytes()[:500_000])
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    paths = [good, str(corrupt), str(truncated), str(empty), good]
    settings = PickSettings(target_pixel_size=8.0, radius=Length(70.0))
    ref = ModelRef("streampick-sim-resnet8-u32", "v-batch")
    executor = executor_from_config(_dask_config(cluster="local", workers=1, tasks_per_worker=1))
    try:
        outcomes = executor.submit([PickTask(path, ref, settings, "cpu") for path in paths]).result(timeout=120)
    finally:
        executor.close()
    assert [isinstance(o, PickFailure) for o in outcomes] == [False, True, True, True, False]
    assert len(outcomes[0].picks) == len(outcomes[4].picks) > 0
    for outcome, path in zip(outcomes[1:4], paths[1:4]):
        message = str(outcome.error)
        assert path in message and "\n" not in message  # one line naming the file


def test_a_worker_keeps_the_newest_model_versions(session):
    settings = PickSettings(target_pixel_size=8.0, radius=Length(70.0))
    path = _mics(session)[0]
    first = cached_model(ModelRef("streampick-sim-resnet8-u32", "v-test-1"), "cpu")
    assert cached_model(ModelRef("streampick-sim-resnet8-u32", "v-test-1"), "cpu") is first  # loaded once
    for i in range(2, 2 + MODEL_CACHE_SIZE):
        cached_model(ModelRef("streampick-sim-resnet8-u32", f"v-test-{i}"), "cpu")
    assert "v-test-1" not in loaded_versions() and len(loaded_versions()) == MODEL_CACHE_SIZE
    executor = InProcessExecutor()
    outcome, = executor.submit([PickTask(path, ModelRef("streampick-sim-resnet8-u32", "v-test-2"), settings,
                                         "cpu")]).result()
    assert len(outcome.picks) > 0
    missing, = executor.submit([PickTask("/no/such/file.mrc", ModelRef("streampick-sim-resnet8-u32", "v-test-2"),
                                         settings, "cpu")]).result()
    assert isinstance(missing, PickFailure) and "/no/such/file.mrc" in str(missing.error)


def test_warm_loads_the_model_on_every_worker_before_any_task_and_says_when_it_cannot(tmp_path):
    executor = executor_from_config(_dask_config(cluster="local", workers=2, tasks_per_worker=1))
    try:
        assert executor.client.run(loaded_versions) == {address: [] for address in executor.client.run(os.getpid)}
        assert executor.warm(ModelRef("streampick-sim-resnet8-u32", "v-warm"), "cpu") == []
        assert set(map(tuple, executor.client.run(loaded_versions).values())) == {("v-warm",)}
        missing = tmp_path / "gone.pt"
        problems = executor.warm(ModelRef(str(missing), "v-gone"), "cpu")
        assert len(problems) == 1 and str(missing) in problems[0]
        # a worker that joins later is warmed too (the plugin stays registered, with the last version asked)
        executor.warm(ModelRef("streampick-sim-resnet8-u32", "v-warm-2"), "cpu")
        executor.owned[0].scale(3)
        executor.client.wait_for_workers(3, timeout=60)
        assert all("v-warm-2" in versions for versions in executor.client.run(loaded_versions).values())
    finally:
        executor.close()
    assert InProcessExecutor().warm(ModelRef("streampick-sim-resnet8-u32", "v-warm-here"), "cpu") == []
    assert "v-warm-here" in loaded_versions()


def _dask_config(**keys) -> dict:
    config = default_config()
    config["executor"]["kind"] = "dask"
    config["dask"].update(keys)
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_a_clear_error_naming_the_key():
    config = _dask_config(scheduler=f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1.0)
    with pytest.raises(ConfigError, match=r"^dask\.scheduler: cannot reach tcp://127\.0\.0\.1"):
        executor_from_config(config)


def test_a_remote_scheduler_without_tls_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match=r"^dask\.scheduler: tcp://10\.1\.2\.3:8786 is outside this machine"):
        check_scheduler_address("tcp://10.1.2.3:8786", allow_remote=False)
    check_scheduler_address("tcp://10.1.2.3:8786", allow_remote=True)
    check_scheduler_address("tls://10.1.2.3:8786", allow_remote=False)  # Dask's TLS: allowed
    check_scheduler_address("tcp://localhost:8786", allow_remote=False)
    with pytest.raises(ConfigError, match=r"^dask\.scheduler: 'http://x:1' is not a Dask address"):
        check_scheduler_address("http://x:1", allow_remote=False)


@pytest.mark.parametrize("text, message", [
    ("executor: dask\ndask: {cluster: kubernetes}\n", r"^dask\.cluster: must be one of local, slurm"),
    ("executor: dask\n", r"^dask\.scheduler: with executor: dask give either"),
    ("executor: dask\ndask: {cluster: local, scheduler: 'tcp://127.0.0.1:8786'}\n", r"^dask\.scheduler: with"),
    ("executor: {kind: spark}\n", r"^executor\.kind: must be one of in-process, dask"),
    ("executor: dask\ndask: {cluster: slurm, adaptive_minimum: 5, adaptive_maximum: 2}\n",
     r"^dask\.adaptive_minimum: 5 is above"),
    ("dask: {workers: 0}\n", r"^dask\.workers: must be positive"),
])
def test_bad_executor_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_slurm_cluster_from_the_config_asks_for_gpus_walltime_and_the_worker_command(tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'streampick[dask]')")
    path = tmp_path / "c.yaml"
    path.write_text("executor: dask\ndask:\n  cluster: slurm\n  slurm_queue: gpu\n  slurm_account: cryo\n"
                    "  slurm_walltime: '08:00:00'\n  slurm_gpus_per_job: 1\n  slurm_cores: 8\n"
                    "  slurm_memory: 64GB\n  slurm_scheduler_host: 127.0.0.1\n  adaptive_maximum: 6\n")
    options = load_config(path)["dask"]
    cluster = slurm_cluster(options)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p gpu" in script and "#SBATCH -A cryo" in script and "#SBATCH -t 08:00:00" in script
    assert "#SBATCH --gres=gpu:1" in script and "--resources GPU=1" in script
    assert "distributed.cli.dask_worker" in script and "tcp://127.0.0.1:" in script
    remote = dict(options, slurm_scheduler_host=None)
    with pytest.raises(ConfigError, match=r"^dask\.cluster: slurm workers reach this scheduler over the network"):
        slurm_cluster(remote)
