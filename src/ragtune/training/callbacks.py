"""Trainer callbacks shared by the embedding and reranker trainers."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence


def release_memory_callback():  # type: ignore[no-untyped-def]
    """Give freed heap back to the OS after every step (`ragtune.memory.release_memory`, ~0.2 s), so each step's
    transient buffers start from the same floor instead of from the fragments of the last one: on SciFact's ICT
    pairs the peak after 22 steps was 2.8 GB with it, 3.2 GB without."""
    from transformers import TrainerCallback

    from ragtune.memory import release_memory

    class ReleaseMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            release_memory()

        def on_evaluate(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            release_memory()

    return ReleaseMemory()


def time_budget_callback(minutes: float):  # type: ignore[no-untyped-def]
    """Stop so that training, including the final evaluation and save, ends within `minutes` of wall clock.

    It stops before the step that would not leave time for one more step plus the last evaluation's duration. A
    step's duration is estimated by `typical_step_seconds` over the recent steps, so a step that took minutes
    because the process was suspended (SIGSTOP, a laptop's sleep) does not make every later step look that long:
    the suspended time still counts against the budget, but training goes on to the deadline.
    """
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.fired = False  # whether the budget, not the planned steps, ended training
            self.deadline = time.perf_counter() + 60.0 * minutes
            self.last_step_end = time.perf_counter()
            self.recent_steps: deque[float] = deque(maxlen=RECENT_STEPS)
            self.eval_seconds: float | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            runtime = (metrics or {}).get("eval_runtime")
            if runtime is not None:  # the fastest evaluation of the same dev set: a suspended one is not typical
                self.eval_seconds = min(float(runtime), self.eval_seconds or float(runtime))
            self.last_step_end = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            self.recent_steps.append(now - self.last_step_end)
            self.last_step_end = now
            needed = typical_step_seconds(self.recent_steps) + 1.2 * (self.eval_seconds or 0.0)
            if now + needed >= self.deadline and not control.should_training_stop:
                self.fired = state.global_step < state.max_steps
                control.should_training_stop = True
                control.should_evaluate = _evaluates(args)
                control.should_save = _evaluates(args)  # the best checkpoint is chosen by evaluation
            return control

    return TimeBudget()


RECENT_STEPS = 20  # how many of the latest steps the time budget's step estimate looks at
OUTLIER_FACTOR = 3.0  # a step over this many times the median of the recent ones was interrupted, not slow


def typical_step_seconds(recent: Sequence[float]) -> float:
    """The longest of the recent step durations that is at most `OUTLIER_FACTOR` times their median.

    The longest keeps the estimate cautious where steps vary (longer batches, a busy machine); leaving out steps far
    above the median keeps one suspended step from counting as typical. With one or two steps the bound (3× the
    median, which is then their mean) is above each of them: the longest is used until there is a median to trust.
    """
    if not recent:
        return 0.0
    bound = OUTLIER_FACTOR * statistics.median(recent)
    return max(seconds for seconds in recent if seconds <= bound)


def step_time_callback(report: Callable[[int, int, float], None], after_steps: int = 2):  # type: ignore[no-untyped-def]
    """Call `report(steps done, planned steps, seconds per step)` once, after `after_steps` steps of this run, so a
    caller can say up front how long training will take."""
    from transformers import TrainerCallback

    class StepTime(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.first_step = 0
            self.reported = False

        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if self.started is None:
                self.started, self.first_step = time.perf_counter(), state.global_step

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            done = state.global_step - self.first_step
            if not self.reported and self.started is not None and done >= after_steps:
                self.reported = True
                report(state.global_step, state.max_steps, (time.perf_counter() - self.started) / done)

    return StepTime()


def _evaluates(args) -> bool:  # type: ignore[no-untyped-def]
    return str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"


def silence_log_printing(trainer) -> None:  # type: ignore[no-untyped-def]
    """Without progress bars, transformers prints every log dict to stdout; ragtune reports its own summary."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
