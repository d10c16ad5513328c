"""Damaged bags: one line naming the file and the fault before anything loads; damage inside an MCAP is found by
its chunk CRCs, counted, and the rest of the bag is used."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, small_world_config
from deep_vision.errors import BagError
from deep_vision.io.bag import BagSequence

FRAMES = 40  # 640x192 mono8: about 12 frames per MCAP chunk, so 4 chunks


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory):
    from deep_vision.synthetic.recording import record

    out = tmp_path_factory.mktemp("bags") / "good"
    record(small_world_config(frames=FRAMES, width=640, height=192), out, workers=1)
    return out


def _copy(good_bag, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(good_bag, bag)
    return bag, next(bag.glob("*.mcap"))


def _damage(bag, tmp_path, how: str):
    bag, mcap = _copy(bag, tmp_path)
    if how == "missing_path":
        return tmp_path / "no_such_bag"
    if how == "not_a_bag":
        (bag / "metadata.yaml").unlink()
    elif how == "missing_storage":
        mcap.unlink()
    elif how == "empty_storage":
        mcap.write_bytes(b"")
    elif how == "truncated":
        data = mcap.read_bytes()
        mcap.write_bytes(data[: len(data) * 2 // 3])
    elif how == "count_mismatch":
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        meta["rosbag2_bagfile_information"]["message_count"] += 5
        (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    elif how == "wrong_storage":
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        meta["rosbag2_bagfile_information"]["storage_identifier"] = "sqlite3"
        (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return bag


CASES = {
    "missing_path": "no such bag",
    "not_a_bag": "not a rosbag2 folder (no metadata.yaml)",
    "missing_storage": "missing (listed in metadata.yaml)",
    "empty_storage": "empty storage file (0 bytes)",
    "truncated": "truncated MCAP file (no footer",
    "count_mismatch": f"lists {FRAMES * 4 + 5} messages, the storage holds {FRAMES * 4}",
    "wrong_storage": "metadata.yaml says storage 'sqlite3' but the file is mcap",
}


@pytest.mark.parametrize("how", list(CASES))
def test_a_broken_bag_is_one_line_naming_the_file(good_bag, tmp_path, how):
    bag = _damage(good_bag, tmp_path, how)
    with pytest.raises(BagError) as err:
        BagSequence(bag)
    assert CASES[how] in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("command, how", [(["evaluate"], "truncated"), (["play"], "empty_storage"),
                                          (["run", "--nodes", "homography", "--bag"], "not_a_bag")])
def test_the_cli_says_it_in_one_line_with_exit_code_2(good_bag, tmp_path, command, how):
    bag = _damage(good_bag, tmp_path, how)
    result = subprocess.run([sys.executable, "-m", "deep_vision.cli.main", *command, str(bag)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert CASES[how] in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "evaluation").exists()  # evaluate left nothing behind


def test_damage_inside_an_mcap_is_found_counted_and_the_rest_used(good_bag, tmp_path):
    """4 KB of random bytes in the middle of the storage file: the chunk's CRC fails, its messages are skipped and
    counted, every other frame is read (the writer stores the CRCs rosbags leaves out)."""
    bag, mcap = _copy(good_bag, tmp_path)
    size = mcap.stat().st_size
    with mcap.open("r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(0).randbytes(4096))
    seq = BagSequence(bag)
    frames = list(seq.frames())
    assert 0 < seq.damaged_messages and len(frames) < FRAMES
    assert len(frames) >= FRAMES - 15  # one chunk (about 12 frames) lost, not the bag
    assert seq.damaged_messages >= FRAMES - len(frames)
    # evaluate reports it
    from deep_vision.pipeline.evaluate import evaluate_bag

    metrics, _ = evaluate_bag(bag, tmp_path / "eval", params_file=REPO / "config" / "perception.yaml",
                              stages=("homography",))
    assert metrics["damaged_messages"] == seq.damaged_messages and metrics["frames"] == len(frames)


def test_evaluate_keeps_an_earlier_result_unless_told_and_cleans_up_after_a_failure(good_bag, tmp_path):
    from deep_vision.errors import DeepVisionError
    from deep_vision.pipeline.evaluate import evaluate_bag

    params = REPO / "config" / "perception.yaml"
    out = tmp_path / "eval"
    evaluate_bag(good_bag, out, params_file=params, stages=("homography",), limit=3)
    with pytest.raises(DeepVisionError, match="is not empty .* pass --overwrite"):
        evaluate_bag(good_bag, out, params_file=params, stages=("homography",), limit=3)
    metrics, _ = evaluate_bag(good_bag, out, params_file=params, stages=("homography",), limit=4, overwrite=True)
    assert metrics["frames"] == 4
    failed = tmp_path / "failed"
    with pytest.raises(DeepVisionError):
        evaluate_bag(good_bag, failed, params_file=params, stages=("homography",), limit=0)  # no frame read
    assert not failed.exists()
