"""Executor side: one training step as timed phases, with Horovod's levers applied where they act.

Keras's own train function is one traced graph: reading the batch, the forward and backward
pass and Horovod's allreduce (inside hvd.DistributedOptimizer) all happen in one call, so
nothing can tell a user which of them limits a step.  This train function, installed in
place of Keras's (fit, callbacks, metrics and checkpoints are unchanged), runs each step as
up to four calls, timed in the worker:

  input      next(iterator): the time this worker waited for its next batch (prefetched, so a
             reader that keeps up costs ~0)
  compute    forward + backward (+ the metrics' update), one traced function
  allreduce  Horovod's allreduce of the gradients: the transfer and the wait for the slowest
             worker (a rank that computes faster waits here); with `overlap`, the part of it the
             backward pass did not hide
  apply      the optimizer's update (loss-scale check and unscaling for float16)

The levers act here: `backward_passes_per_step` accumulates that many batches' gradients
locally (their mean: the gradient of one batch that many times larger) and reduces once;
`compression: fp16` hands Horovod float16 gradients (half the bytes) and casts them back.
With float16 mixed precision the *scaled* gradients are reduced and unscaled afterwards, so
every rank's finiteness check sees the same numbers and all skip or apply a step together.
With one worker nothing is reduced.

Nothing is read from the device per step: the loss and metrics reach the host at the epoch's end
(Keras converts the epoch's logs then), the batch callbacks get the step's logs as tensors (they read
none of them; `hands_tensor_logs`), and the exposed allreduce time is summed in the graph and read
with the epoch's breakdown.  On a CPU a traced call returns when its work is done, so each phase is
the time its work took.  On a GPU a call returns once its work is queued: a phase is then the time
the host waited in it, and a step's compute shows up in the first call that waits for it (Horovod's
allreduce waits for the gradients; with one worker, the epoch's end).

Keras's own train step also counts batches in the model's private `_train_counter`; in Keras 2.15
only callbacks this training does not use read it (TensorBoard's batch summaries, BackupAndRestore,
ProgbarLogger without steps_per_epoch), so it is left alone: batches are counted here (StepClock),
updates by the optimizer's public `iterations`.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional

PHASES = ("input", "compute", "allreduce", "apply")
COMPRESSIONS = ("none", "fp16")
logger = logging.getLogger("sparkcnn.training")


class StepClock:
    """Phase seconds of the epoch under way, filled by the train function; one summary per epoch.

    Step time is measured from outside (the batch callbacks around Keras's call of the train
    function), so what the phases do not cover shows up as `other` instead of vanishing.
    """

    def __init__(self):
        self.epochs: List[dict] = []
        # The overlapped allreduce's exposed seconds, summed in the graph (a tf.Variable; set by install):
        # counted as compute by the host's clock, moved to allreduce once per epoch.
        self.exposed_total = None
        self._reset()

    def _reset(self):
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.step_seconds = 0.0
        self.steps = 0
        self.updates = 0

    def add(self, **seconds: float) -> None:
        for name, value in seconds.items():
            self.phases[name] += value

    def step(self, seconds: float) -> None:
        self.step_seconds += seconds
        self.steps += 1

    def _move_exposed(self) -> None:
        if self.exposed_total is None:
            return
        exposed = float(self.exposed_total.numpy())
        self.exposed_total.assign(0.0)
        self.phases["compute"] -= exposed
        self.phases["allreduce"] += exposed

    def end_epoch(self) -> dict:
        """The epoch's breakdown in ms per step; phases + other = step."""
        self._move_exposed()
        n = max(self.steps, 1)
        entry = {f"{k}_ms": 1000 * v / n for k, v in self.phases.items()}
        entry["step_ms"] = 1000 * self.step_seconds / n
        entry["other_ms"] = entry["step_ms"] - sum(entry[f"{k}_ms"] for k in PHASES)
        entry["steps"] = self.steps
        entry["updates"] = self.updates
        self.epochs.append(entry)
        self._reset()
        return entry


def describe(ms: dict, digits: int = 1) -> str:
    """`step 348.2 ms = input 1.3 + compute 299.3 + allreduce 43.5 + apply 3.8 + other 0.4` from ms per step."""
    return f"step {ms['step_ms']:.{digits}f} ms = " + " + ".join(
        f"{k} {ms[f'{k}_ms']:.{digits}f}" for k in (*PHASES, "other"))


def hands_tensor_logs(callback):
    """Mark a callback that reads no batch logs, so Keras hands them over as they are (tensors).

    Keras 2.15 copies a step's logs to the host (a sync with the device) before any batch hook of a
    callback without its `_supports_tf_logs` flag, however little the hook does: the step clock's and
    Horovod's broadcast and warm-up hooks read no logs.  The flag is Keras's own, private (its built-in
    callbacks set it); Keras has no public switch for this.
    """
    callback._supports_tf_logs = True
    return callback


def clock_callback(tf, clock: StepClock, log_epochs: bool = False):
    """Times each Keras step from outside the train function and closes the clock's epoch (logging its
    breakdown when `log_epochs`: rank 0 speaks for all)."""

    class PhaseClockCallback(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            clock.step(time.perf_counter() - self.t0)

        def on_epoch_end(self, epoch, logs=None):
            entry = clock.end_epoch()
            if log_epochs:
                logger.info(f"[train] epoch {epoch + 1} {describe(entry)}")

    return hands_tensor_logs(PhaseClockCallback())


def gradient_bytes(variables, compression: str) -> int:
    """Bytes handed to Horovod per allreduce (float gradients travel as float16 under fp16)."""
    total = 0
    for v in variables:
        size = 2 if compression == "fp16" and v.dtype.is_floating else v.dtype.size
        total += int(v.shape.num_elements()) * size
    return total


def _check_levers(passes: int, compression: str) -> None:
    if passes < 1:
        raise ValueError(f"backward_passes_per_step must be >= 1, got {passes}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def _compressed(tf, allreduce: Callable, compression: str) -> Callable:
    """Horovod's allreduce, handed float16 gradients under fp16 compression (half the bytes) and cast back."""
    def compressed_allreduce(grads):
        if compression == "fp16":
            dtypes = [g.dtype for g in grads]
            sent = [tf.cast(g, tf.float16) if g.dtype.is_floating else g for g in grads]
            return [tf.cast(r, d) for r, d in zip(allreduce(sent), dtypes)]
        return allreduce(grads)
    return compressed_allreduce


def _forward_backward(tf, model, passes: int, reduce_inside: Optional[Callable], clock: StepClock) -> Callable:
    """The compute phase, one traced function of (x, y, final): the loss (scaled under float16), the
    gradients and the metrics' update -> (gradients, logs).

    With passes > 1 the gradients of a step that is not `final` are only accumulated (no gradients
    returned); the final one returns the mean of all.  `reduce_inside` (overlap): the reduction starts
    per tensor as soon as its gradient exists, and the graph stamps the time between the last gradient
    and the last reduction (the exposed allreduce), summed into the clock's `exposed_total`.
    """
    optimizer = model.optimizer
    loss_scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    variables = model.trainable_variables
    accumulators = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables] if passes > 1 else []
    if reduce_inside is not None:
        with tf.device("/CPU:0"):                   # where tf.timestamp's values are
            clock.exposed_total = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def forward_backward(x, y, final: bool):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x, y, y_pred)
            scaled = optimizer.get_scaled_loss(loss) if loss_scaled else loss
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]
        logs = model.compute_metrics(x, y, y_pred, None)
        if passes > 1 and not final:
            for acc, g in zip(accumulators, grads):
                acc.assign_add(g)
            return [], logs
        if passes > 1:
            grads = [(acc + g) / passes for acc, g in zip(accumulators, grads)]
            with tf.control_dependencies(grads):
                for acc in accumulators:
                    acc.assign(tf.zeros_like(acc))
        if reduce_inside is None:
            return grads, logs
        with tf.control_dependencies(grads):
            ready = tf.timestamp()                  # the last gradient exists
        reduced = reduce_inside(grads)              # each reduction started when its gradient was ready
        with tf.control_dependencies(reduced):
            clock.exposed_total.assign_add(tf.timestamp() - ready)
        return reduced, logs
    return tf.function(forward_backward, reduce_retracing=True)


def _apply(tf, model) -> Callable:
    """The apply phase, one traced function of the gradients: unscaled (float16), then the optimizer's update."""
    optimizer = model.optimizer
    loss_scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def apply(grads):
        if loss_scaled:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, variables))
    return apply


def _timed_train_function(forward_backward: Callable, reduce: Optional[Callable], apply: Callable,
                          clock: StepClock, passes: int) -> Callable:
    """Keras's train function: one step as its phases, each timed into `clock`; `reduce` None: nothing to
    reduce after the compute phase (one worker, or reduced inside it)."""
    state = {"batch": 0}

    def train_function(iterator):
        t0 = time.perf_counter()
        x, y = next(iterator)
        t1 = time.perf_counter()
        final = state["batch"] % passes == passes - 1
        state["batch"] += 1
        grads, logs = forward_backward(x, y, final)   # logs stay on the device: Keras reads them at the epoch's end
        t2 = time.perf_counter()
        t3 = t2
        if final:
            if reduce is not None:
                grads = reduce(grads)
            t3 = time.perf_counter()
            apply(grads)
            clock.updates += 1
        t4 = time.perf_counter()
        clock.add(input=t1 - t0, compute=t2 - t1, allreduce=t3 - t2, apply=t4 - t3)
        return logs
    return train_function


def install(tf, model, allreduce: Optional[Callable], clock: StepClock, passes: int = 1,
            compression: str = "none", overlap: bool = False) -> Callable:
    """Replace model's train function by the phased one; `allreduce` None: one worker, nothing reduced.

    `allreduce(list of tensors) -> list of averaged tensors` is Horovod's: grouped (one fused
    reduction after the backward pass, its own traced call) or, with `overlap`, one reduction per
    tensor inside the compute function, each started as soon as its gradient exists (Horovod
    fuses what is ready each cycle), so transfer overlaps the rest of the backward pass.  Then
    the graph itself stamps the time between the last gradient being ready and the last
    reduction being done (tf.timestamp): the exposed allreduce, reported as `allreduce`, the
    rest of the call as `compute`.
    """
    _check_levers(passes, compression)
    reduced = _compressed(tf, allreduce, compression) if allreduce is not None else None
    reduce_inside = reduced if overlap else None
    reduce_after = tf.function(reduced, reduce_retracing=True) if reduced is not None and not overlap else None
    train_function = _timed_train_function(_forward_backward(tf, model, passes, reduce_inside, clock), reduce_after,
                                           _apply(tf, model), clock, passes)
    model.train_function = train_function
    model.make_train_function = lambda force=False: train_function
    return train_function


def summarise(ranks: List[Dict]) -> Dict:
    """Every rank's per-epoch breakdowns -> the ms per step of each phase (mean over ranks of the
    median epoch after the first, which carries tracing), as history.json and the report show it."""
    import statistics
    per_rank = [r["epochs"] for r in ranks if r and r.get("epochs")]
    if not per_rank:
        return {}
    keys = [f"{k}_ms" for k in (*PHASES, "other", "step")]
    out = {}
    for key in keys:
        medians = [statistics.median(e[key] for e in (epochs[1:] or epochs)) for epochs in per_rank]
        out[key] = sum(medians) / len(medians)
    return out
