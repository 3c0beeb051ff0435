"""The simulated microscope: whole, valid MRC files on a schedule, in every write mode, stoppable."""
from __future__ import annotations

import argparse
import threading

import mrcfile
import numpy as np
import pytest

from streampick.commands import microscope as microscope_command
from streampick.io.coords import read_coordinates
from streampick.io.micrograph import mrc_is_complete
from streampick.microscope import WRITE_MODES, run_microscope


def write_mode(path) -> str:
    with mrcfile.open(path, header_only=True) as mrc:
        return mrc.header.label[0].decode().rsplit(" ", 1)[-1]


def test_writes_valid_micrographs_in_every_mode_in_turn(tmp_path):
    out = tmp_path / "session"
    calls: list[tuple] = []
    paths = run_microscope(out, 6, interval_s=0.05, size=256, slow_write_s=0.1,
                           on_written=lambda path, t: calls.append((path, t)))
    assert paths == [out / f"mic_{i:05d}.mrc" for i in range(6)]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths]  # no temporary file left
    for path in paths:
        assert mrc_is_complete(path)
        with mrcfile.open(path) as mrc:  # strict mode: any header fault raises
            assert mrc.data.shape == (256, 256) and mrc.data.dtype == np.float32
            assert float(mrc.voxel_size.x) == pytest.approx(1.0)
    assert [write_mode(p) for p in paths] == list(WRITE_MODES) * 2
    assert [path for path, _ in calls] == paths
    times = [t for _, t in calls]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_same_seed_same_images_and_truth_outside_the_folder(tmp_path):
    first = run_microscope(tmp_path / "a", 2, interval_s=0.0, size=512, pixel_size=4.0, slow_write_s=0.0,
                           write_modes=("copy",), truth_dir=tmp_path / "truth", seed=3)
    second = run_microscope(tmp_path / "b", 2, interval_s=0.0, size=512, pixel_size=4.0, slow_write_s=0.0,
                            write_modes=("temp-rename",), seed=3)
    for a, b in zip(first, second):
        with mrcfile.open(a) as one, mrcfile.open(b) as two:
            np.testing.assert_array_equal(one.data, two.data)
    assert sorted(p.name for p in (tmp_path / "truth").iterdir()) == ["mic_00000.star", "mic_00001.star"]
    assert not list((tmp_path / "a").glob("*.star"))
    truth = read_coordinates(tmp_path / "truth" / "mic_00000.star")
    assert sum(len(picks) for picks in truth.values()) > 0  # 512 px at 4 Å/px holds a few 150 Å particles


def test_a_reader_sees_an_in_place_write_incomplete_before_it_is_whole(tmp_path):
    out = tmp_path / "session"
    path = out / "mic_00000.mrc"
    done = threading.Event()
    seen: list[bool] = []
    writer = threading.Thread(target=lambda: (run_microscope(out, 1, size=256, slow_write_s=0.5,
                                                             write_modes=("in-place",)), done.set()))
    writer.start()
    try:
        while not done.wait(0.002):
            if path.exists():
                seen.append(mrc_is_complete(path))
    finally:
        writer.join(10)
    assert done.is_set()
    assert False in seen, "the reader never saw the file before it was whole"
    first_whole = seen.index(True) if True in seen else len(seen)
    assert not any(seen[:first_whole]) and all(seen[first_whole:])  # incomplete, then whole for good
    assert mrc_is_complete(path)


def test_stop_finishes_the_current_file_and_writes_no_more(tmp_path):
    out = tmp_path / "session"
    stop = threading.Event()
    paths = run_microscope(out, 5, interval_s=30.0, size=256, slow_write_s=0.05, write_modes=("temp-rename",),
                           stop=stop, on_written=lambda path, t: stop.set())
    # The next slot is 30 s away; the stop set after the first file makes the wait for it return at once.
    assert paths == [out / "mic_00000.mrc"]
    assert [p.name for p in out.iterdir()] == ["mic_00000.mrc"]


def test_a_stop_during_a_slow_write_still_leaves_a_whole_file(tmp_path):
    out = tmp_path / "session"
    stop = threading.Event()
    result: list = []
    writer = threading.Thread(target=lambda: result.append(
        run_microscope(out, 3, interval_s=0.0, size=256, slow_write_s=30.0, write_modes=("in-place",),
                       stop=stop)))
    writer.start()
    try:
        while not (out / "mic_00000.mrc").exists() and writer.is_alive():
            stop.wait(0.002)
        stop.set()
    finally:
        writer.join(10)
    assert not writer.is_alive()
    assert result == [[out / "mic_00000.mrc"]] and mrc_is_complete(out / "mic_00000.mrc")


@pytest.mark.parametrize("options", [{"n": -1}, {"size": 8}, {"write_modes": ()}, {"write_modes": ("scp",)}])
def test_bad_arguments_raise_value_error(tmp_path, options):
    kwargs = {"n": 1, **options}
    n = kwargs.pop("n")
    with pytest.raises(ValueError):
        run_microscope(tmp_path, n, **kwargs)


def test_microscope_command_prints_a_line_per_file(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    microscope_command.add_args(parser)
    args = parser.parse_args([str(tmp_path / "out"), "--n", "3", "--interval", "0", "--size", "64",
                              "--slow-write", "0", "--modes", "copy", "in-place"])
    assert microscope_command.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert [line.split()[-1] for line in lines] == ["copy", "in-place", "copy"]
    assert all(f"mic_0000{i}.mrc" in line for i, line in enumerate(lines))
