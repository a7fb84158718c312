"""The learning-rate schedule every training driver follows (pure Python, set before each
step, so a run's length can be steps or a time budget and any backend can use it)."""
import math

SCHEDULES = ("cosine", "constant")
FINAL_RATIO = 0.01  # the cosine decay ends at lr × this


def progress(step, steps, elapsed=0.0, time_budget=0.0):
    """How much of the run is done, in [0, 1]: by steps or by time, whichever is further."""
    done = step / steps if steps else 0.0
    if time_budget:
        done = max(done, elapsed / time_budget)
    return min(1.0, done)


def learning_rate(step, lr, schedule="cosine", warmup=0, done=0.0):
    """``constant``: ``lr``. ``cosine``: linear warm-up over ``warmup`` steps (from lr/warmup
    at step 0 to lr), then cosine decay from lr to lr × FINAL_RATIO as ``done`` (see
    :func:`progress`) goes from 0 to 1."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r} "
                         f"(expected one of {', '.join(SCHEDULES)})")
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (FINAL_RATIO + (1 - FINAL_RATIO) * 0.5 * (1 + math.cos(math.pi * done)))
