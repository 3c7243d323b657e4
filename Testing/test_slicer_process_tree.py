"""The session's segmentation process and its jobs, as they run inside Slicer: `PythonSlicer` is a launcher
that starts the real Python as its child and passes no signal on. A cancel stops the job and keeps the process,
or ends its whole tree when the job does not stop; a process killed from outside is replaced; shutdown leaves
nothing running. The `job_stand_ins` fixture (Testing/slicer_job_stand_ins.py) puts a launcher that does the
same and a quick serving runner in place.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slicer_job_stand_ins import ended, runner_pid, running

from CACScoringLib.volume import CTVolume

pytestmark = [pytest.mark.slicer, pytest.mark.skipif(os.name == "nt", reason="reads process states from /proc")]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "CACScoring"))


def small_ct() -> CTVolume:
    array = np.zeros((3, 8, 8), np.float32)
    array[1, 2:4, 2:4] = 400.0
    return CTVolume(array=array, spacing=(0.5, 0.5, 3.0))


@pytest.mark.parametrize("device", ["cpu", "ignore-sigterm"])
def test_a_cancelled_job_stops_and_its_process_stays_unless_it_had_to_be_killed(job_stand_ins, device):
    """A runner that stops the job on SIGTERM serves the next job; one that does not is killed, launcher and
    Python, and the next job starts a new one."""
    from CACScoringSlicerLib.inference_job import InferenceJob

    work_s = 2.0
    job = InferenceJob(small_ct(), model=str(work_s), device=device, python=str(job_stand_ins)).start()
    runner = runner_pid(job)
    launcher = job._process.pid
    assert runner != launcher and running(runner) and running(launcher)
    started = time.monotonic()
    job.cancel(grace_s=1.0)
    heeded = device == "cpu"
    assert time.monotonic() - started < (1.0 if heeded else 3.0)  # a heeded SIGTERM needs no kill
    if not heeded:
        assert ended(launcher) and ended(runner)
    assert job.wait(timeout_s=5).state == "cancelled"
    time.sleep(work_s + 0.5)  # past the time the runner would have written its labels
    assert not job.labels_path.exists()
    assert running(runner) == running(launcher) == heeded
    job.close()
    assert not job.workdir.exists()

    after = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    assert after.wait(timeout_s=30).state == "done"
    assert (runner_pid(after) == runner) == (after._process.pid == launcher) == heeded
    after.close()


def test_a_job_that_is_not_cancelled_writes_its_labels_through_the_launcher(job_stand_ins):
    import SimpleITK as sitk
    from CACScoringSlicerLib.inference_job import InferenceJob

    job = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    status = job.wait(timeout_s=60)
    assert (status.state, status.progress) == ("done", 1.0), status.message
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(job.labels_path)))
    assert labels.sum() == 2 * 4 and labels[1, 2:4, 2:4].tolist() == [[2, 2], [2, 2]]
    job.close()


def test_broken_output_fails_the_job_and_ends_its_processes(job_stand_ins):
    from CACScoringSlicerLib.inference_job import InferenceJob

    job = InferenceJob(small_ct(), model="60", device="undecodable", python=str(job_stand_ins)).start()
    runner = runner_pid(job)
    status = job.wait(timeout_s=20)  # without the fix the job stays "running" and this raises TimeoutError
    assert status.state == "failed"
    assert status.message.startswith("the segmentation job broke (UnicodeDecodeError")
    assert ended(runner) and ended(job._process.pid)
    job.close()


def test_a_missing_pythonslicer_is_a_message(monkeypatch, tmp_path):
    import slicer
    from CACScoringSlicerLib.inference_job import InferenceJob

    from CACScoringLib.errors import InputError

    monkeypatch.setattr(slicer, "app", object(), raising=False)  # inside the Slicer application
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="PythonSlicer, Slicer's Python launcher, is not on the PATH"):
        InferenceJob(small_ct(), model="0")


def two_cts_of_one_shape(slicer_scene):
    """CT A with calcium at one place, CT B (same grid) at another."""
    from CACScoringSlicerLib.geometry import add_volume_node

    a, b = small_ct(), small_ct()
    b.array[:] = 0.0
    b.array[2, 5:7, 5:8] = 300.0
    return (add_volume_node(slicer_scene.scene, a, "A"), add_volume_node(slicer_scene.scene, b, "B"))


def test_the_result_lands_on_the_nodes_the_job_started_on(slicer_scene, scene_logic, job_stand_ins):
    from CACScoringSlicerLib.logic import ScoringOptions

    volume_a, volume_b = two_cts_of_one_shape(slicer_scene)
    segmentation_a = scene_logic.create_segmentation_node(volume_a)
    segmentation_b = scene_logic.create_segmentation_node(volume_b)
    job = scene_logic.start_inference(volume_a, segmentation_a, ScoringOptions(model="1", device="cpu"))
    scene_logic.remember(volume_b, segmentation_b)  # the reader selects CT B while A is segmented
    assert job.wait(timeout_s=60).state == "done"
    written = scene_logic.finish_inference(job)

    assert written is segmentation_a and scene_logic.volume_node is volume_a
    expected_a = np.zeros((3, 8, 8), np.uint8)
    expected_a[1, 2:4, 2:4] = 2
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_a, volume_a), expected_a)
    assert not scene_logic.labels_from_segmentation(segmentation_b, volume_b).any()
    assert slicer_scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2
    assert not job.workdir.exists()


def test_a_result_whose_nodes_were_deleted_goes_nowhere_with_a_message(slicer_scene, scene_logic, job_stand_ins):
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.errors import InputError

    volume_a, _ = two_cts_of_one_shape(slicer_scene)
    segmentation_a = scene_logic.create_segmentation_node(volume_a)
    job = scene_logic.start_inference(volume_a, segmentation_a, ScoringOptions(model="1", device="cpu"))
    slicer_scene.scene.RemoveNode(segmentation_a)
    assert job.wait(timeout_s=60).state == "done"
    with pytest.raises(InputError, match="the segmentation this run was for was deleted while it ran"):
        scene_logic.finish_inference(job)
    assert slicer_scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert scene_logic.result is None and not job.workdir.exists()


def test_the_ct_is_written_uncompressed_by_the_worker_not_the_calling_thread(job_stand_ins, monkeypatch):
    import threading
    import types

    import SimpleITK as sitk
    from CACScoringSlicerLib import inference_job

    release, writers = threading.Event(), []

    def write_image(image, path, compress):
        writers.append((threading.current_thread(), compress))
        assert release.wait(30)
        sitk.WriteImage(image, path, compress)

    monkeypatch.setattr(inference_job, "sitk", types.SimpleNamespace(WriteImage=write_image))
    job = inference_job.InferenceJob(small_ct(), model="0", device="cpu").start()
    status = job.poll()  # returns at once although the CT is not written yet
    assert (status.state, status.message) == ("running", "writing the CT")
    release.set()
    assert job.wait(timeout_s=60).state == "done"
    ((writer, compress),) = writers
    assert writer is not threading.main_thread() and compress is False
    header_bytes = 348 + 4  # NIfTI-1 header and extension flag, then the float32 voxels as they are
    assert job.input_path.stat().st_size == header_bytes + 3 * 8 * 8 * 4
    job.close()


def test_on_windows_the_job_gets_its_own_process_group_no_console_and_a_tree_kill(monkeypatch):
    """The Windows branch, run here with Windows' constants and a recording Popen (no Windows machine)."""
    import subprocess
    import types

    from CACScoringSlicerLib import process_tree

    class StartupInfo:
        dwFlags = 0
        wShowWindow = 1  # SW_SHOWNORMAL

    started, ran = [], []
    windows = {"STARTUPINFO": StartupInfo, "STARTF_USESHOWWINDOW": 0x1, "SW_HIDE": 0,
               "CREATE_NEW_PROCESS_GROUP": 0x200, "CREATE_NO_WINDOW": 0x08000000}
    for name, value in windows.items():
        monkeypatch.setattr(subprocess, name, value, raising=False)
    monkeypatch.setattr(subprocess, "Popen", lambda command, **kwargs: started.append(kwargs) or
                        types.SimpleNamespace(pid=4321))
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: ran.append((command, kwargs)))
    monkeypatch.setattr(process_tree.os, "name", "nt")
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: taskkill

    process = process_tree.start(["PythonSlicer", "runner.py"], text=True)
    (kwargs,) = started
    assert kwargs["creationflags"] == 0x08000200 and "start_new_session" not in kwargs
    assert kwargs["startupinfo"].dwFlags & 0x1 and kwargs["startupinfo"].wShowWindow == 0
    process_tree.terminate(process)
    ((command, run_kwargs),) = ran
    assert command == ["taskkill", "/T", "/F", "/PID", "4321"] and run_kwargs["creationflags"] == 0x08000000


def test_a_cancel_without_waiting_kills_a_deaf_runner_once_the_grace_time_is_over(job_stand_ins):
    from CACScoringSlicerLib.inference_job import InferenceJob

    job = InferenceJob(small_ct(), model="30", device="ignore-sigterm").start()
    runner = runner_pid(job)
    job.cancel(grace_s=0.5, wait=False)  # returns at once
    assert job.cancel_requested and job.poll().state == "running" and running(runner)
    assert job.wait(timeout_s=20).state == "cancelled"  # poll() killed the tree after the grace time
    assert ended(runner) and ended(job._process.pid)
    job.close()


def kill_tree(pid: int) -> None:
    """From outside, as an out-of-memory kill or a user's `kill` would."""
    import signal

    os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["mid-job", "between jobs"])
def test_a_session_process_killed_from_outside_fails_its_job_and_the_next_starts_a_new_one(job_stand_ins, when):
    from CACScoringSlicerLib.inference_job import InferenceJob

    first = InferenceJob(small_ct(), model="30" if when == "mid-job" else "0", device="cpu",
                         python=str(job_stand_ins)).start()
    runner = runner_pid(first)
    launcher = first._process.pid
    if when == "between jobs":
        assert first.wait(timeout_s=30).state == "done"
    kill_tree(launcher)
    assert ended(launcher) and ended(runner)
    if when == "mid-job":
        status = first.wait(timeout_s=10)
        assert status.state == "failed"
        assert status.message.startswith("the segmentation process ended unexpectedly (exit code ")
        assert "Apply again starts a new one" in status.message
    first.close()

    after = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    status = after.wait(timeout_s=30)
    assert status.state == "done", status.message
    assert runner_pid(after) != runner and after._process.pid != launcher
    after.close()


def test_shutdown_ends_the_whole_tree_of_the_session_process(job_stand_ins):
    from CACScoringSlicerLib import inference_worker
    from CACScoringSlicerLib.inference_job import InferenceJob

    job = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    assert job.wait(timeout_s=30).state == "done"
    runner, launcher = runner_pid(job), job._process.pid
    assert running(runner) and running(launcher)  # idle, waiting for the next job
    inference_worker.shutdown()
    assert ended(launcher) and ended(runner)
    assert inference_worker.WORKER.process is None
    job.close()


def test_shutdown_kills_a_session_process_that_does_not_end_on_eof(job_stand_ins):
    from CACScoringSlicerLib import inference_worker
    from CACScoringSlicerLib.inference_job import InferenceJob

    job = InferenceJob(small_ct(), model="30", device="ignore-sigterm", python=str(job_stand_ins)).start()
    runner, launcher = runner_pid(job), job._process.pid
    started = time.monotonic()
    inference_worker.WORKER.shutdown(grace_s=0.5)  # mid-job: the runner reads no more of its stdin
    assert time.monotonic() - started < 3.0
    assert ended(launcher) and ended(runner)
    assert job.wait(timeout_s=10).state == "failed"
    job.close()


def test_a_second_job_waits_for_the_first_and_runs_on_the_same_process(job_stand_ins):
    from CACScoringSlicerLib.inference_job import InferenceJob

    first = InferenceJob(small_ct(), model="1", device="cpu", python=str(job_stand_ins)).start()
    second = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    assert first.wait(timeout_s=30).state == "done" and second.wait(timeout_s=30).state == "done"
    assert first._process is second._process and runner_pid(first) == runner_pid(second)
    first.close()
    second.close()


def test_a_late_stop_or_kill_for_an_earlier_job_does_not_reach_the_running_one(job_stand_ins):
    from CACScoringSlicerLib.inference_job import InferenceJob
    from CACScoringSlicerLib.inference_worker import WORKER

    earlier = InferenceJob(small_ct(), model="0", device="cpu", python=str(job_stand_ins)).start()
    assert earlier.wait(timeout_s=30).state == "done"
    job = InferenceJob(small_ct(), model="1", device="cpu", python=str(job_stand_ins)).start()
    runner = runner_pid(job)
    WORKER.stop_job(earlier)  # what a cancel or a grace-time kill of `earlier` arriving now would send
    WORKER.kill(earlier)
    assert job.wait(timeout_s=30).state == "done" and running(runner)
    earlier.close()
    job.close()
