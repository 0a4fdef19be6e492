"""ZeroGPU: a finetune runs inside a (fake) ``@spaces.GPU`` generator, relays its progress and
saves the model before the decorated call returns. The real ``spaces`` package only exists on a
Space, so a fake module whose decorator records the duration and runs the generator in-process
stands in for it; the training itself is real (tiny model, real images, real store)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from mmdemo.data.demo import generate_demo_scenes
from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.store import Store
from mmdemo.settings import Settings
from mmdemo.training.jobs import JobManager
from mmdemo.training.run import MODEL_DIRNAME, TrainConfig, TrainingJob
from mmdemo.training.zerogpu import MARGIN_S, gpu_duration, gpu_runner

WAIT = 300.0  # a safety net for the background run, not a speed check


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mmdemo.retrieval.models import build_tiny_clip

    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny-clip", seed=0))


class FakeSpaces(types.ModuleType):
    """``spaces`` with a ``GPU(duration=…)`` that records each call and what existed at its end."""

    def __init__(self, runs_dir: Path):
        super().__init__("spaces")
        self.runs_dir = runs_dir
        self.durations: list[int] = []
        self.calls: list[dict] = []

    def GPU(self, duration: int = 60):  # noqa: N802 - the real package's name
        def decorate(fn):
            def wrapper(*args, **kwargs):
                call = {"duration": duration, "yielded": 0, "models_at_exit": None}
                self.calls.append(call)
                for item in fn(*args, **kwargs):
                    call["yielded"] += 1
                    yield item
                # The generator is exhausted: this is where a forked child would exit.
                saved = self.runs_dir.glob(f"*/{MODEL_DIRNAME}/*.safetensors")
                call["models_at_exit"] = sorted({p.parent.parent.name for p in saved})

            self.durations.append(duration)
            return wrapper

        return decorate


@pytest.fixture
def fake_spaces(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FakeSpaces:
    module = FakeSpaces(settings.runs_dir)
    monkeypatch.setitem(sys.modules, "spaces", module)
    return module


def _demo(store: Store, settings: Settings, n: int = 24) -> None:
    collection = store.create_collection("shapes")
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(n, seed=0):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), scene.caption, split=scene.split)


def test_no_runner_off_a_space_or_without_the_spaces_package(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces → ImportError
    assert gpu_runner(settings.with_overrides(space_id="me/demo")) is None
    monkeypatch.setitem(sys.modules, "spaces", FakeSpaces(settings.runs_dir))
    assert gpu_runner(settings) is None  # not on a Space
    assert gpu_runner(settings.with_overrides(space_id="me/demo")) is not None


def test_duration_follows_the_time_budget():
    assert gpu_duration(TrainConfig(max_minutes=2.0)) == int(120 + MARGIN_S)
    assert gpu_duration(TrainConfig(max_minutes=10.0)) == int(600 + MARGIN_S)
    assert gpu_duration(TrainConfig(max_minutes=0.5)) < gpu_duration(TrainConfig(max_minutes=1))


def test_a_finetune_on_zerogpu_trains_inside_the_gpu_call(store, settings, fake_spaces, tiny_path):
    _demo(store, settings)
    space = settings.with_overrides(space_id="me/demo")
    config = TrainConfig(epochs=3.0, batch_size=8, max_minutes=0.75, augment=False)
    manager = JobManager(store)
    job_id = manager.start(
        TrainingJob(store, space, "shapes", config, "zero-run", tiny_path, gpu_runner(space))
    )
    snap = manager.wait(job_id, timeout=WAIT)

    assert snap is not None and snap.state == "finished", snap and snap.message
    assert fake_spaces.durations == [int(45 + MARGIN_S)]
    (call,) = fake_spaces.calls
    # The model was on disk before the decorated generator returned.
    assert call["models_at_exit"] == ["zero-run"]
    assert (settings.runs_dir / "zero-run" / MODEL_DIRNAME).is_dir()
    # Progress was relayed to the job's board: steps, the loss curve and the metrics.
    progress = snap.progress
    assert call["yielded"] >= 2
    assert progress["step"] == progress["total_steps"] > 0
    assert progress["run_name"] == "zero-run"
    assert len(progress["loss_history"]) >= 1
    assert progress["metrics"]["finetuned"]["t2i"]["recall@1"] >= 0.0
    assert snap.result.status == "finished" and snap.result.steps == progress["step"]
    assert store.get_run("zero-run").status == "finished"
    assert not list(settings.tmp_dir.glob("stop-*"))  # the cancel flag is cleaned up


def test_cancel_reaches_the_gpu_call_through_the_flag(store, settings, fake_spaces, tiny_path):
    _demo(store, settings)
    space = settings.with_overrides(space_id="me/demo")
    config = TrainConfig(epochs=500.0, batch_size=8, max_minutes=5.0, augment=False)
    manager = JobManager(store)
    job_id = manager.start(
        TrainingJob(store, space, "shapes", config, "zero-cancel", tiny_path, gpu_runner(space))
    )
    seen_training = False
    for _ in range(int(WAIT * 10)):
        snap = manager.status(job_id)
        if snap.progress.get("phase") == "training" and snap.progress.get("step", 0) >= 1:
            seen_training = True
            break
        if not snap.running:
            break
        manager.wait(job_id, timeout=0.1)
    assert seen_training, manager.status(job_id).message
    assert manager.cancel(job_id)
    snap = manager.wait(job_id, timeout=WAIT)
    assert snap.state == "cancelled", snap.message
    assert snap.result.steps < snap.progress["total_steps"]
    assert fake_spaces.calls[0]["models_at_exit"] == ["zero-cancel"]  # kept, saved in the call
