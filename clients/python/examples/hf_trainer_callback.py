"""Example: report a Hugging Face Trainer run to accel-agent.

An example, not a dependency: copy it beside your script with goodput.py.

    trainer = Trainer(..., callbacks=[GoodputCallback("llama70b-0412",
                                                      flops_per_token=6 * n_params)])
"""

import time

from transformers import TrainerCallback  # the user's own dependency

import goodput


class GoodputCallback(TrainerCallback):
    """Steps with their wall time, tokens and model FLOPs, and checkpoints.

    The Trainer has no hook before an evaluation or a save, so time those
    yourself where you call them: ``with callback.run.phase("eval"):
    trainer.evaluate()``."""

    def __init__(self, run_name, tokens_per_step=None, flops_per_token=None, labels=None):
        self.run_name = run_name
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.labels = labels or {}
        self.run = None
        self.t_step = None
        self.t_save = None

    def on_train_begin(self, args, state, control, **kwargs):
        labels = dict(self.labels, batch_size=str(args.per_device_train_batch_size))
        self.run = goodput.Run(self.run_name, rank=args.process_index,
                               world_size=args.world_size,
                               resume_step=state.global_step or None,
                               labels=labels).start()

    def on_step_begin(self, args, state, control, **kwargs):
        self.t_step = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.run is None or self.t_step is None:
            return
        tokens = self.tokens_per_step
        flops = tokens * self.flops_per_token if tokens and self.flops_per_token else None
        self.run.step(time.monotonic() - self.t_step, tokens=tokens, model_flops=flops,
                      step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.checkpoint(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.end()
            self.run.close()
