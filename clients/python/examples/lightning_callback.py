"""Example: report a PyTorch Lightning run to accel-agent.

An example, not a dependency: copy it beside your script with goodput.py.

    trainer = L.Trainer(callbacks=[GoodputCallback("llama70b-0412",
                                                   tokens_per_batch=4096 * 1024,
                                                   flops_per_token=6 * n_params)])
"""

import time

import lightning as L  # the user's own dependency

import goodput


class GoodputCallback(L.Callback):
    """Each training batch (one step; with gradient accumulation, a
    micro-step) with its wall time, tokens and model FLOPs;
    validation and checkpoint saves as phases."""

    def __init__(self, run_name, tokens_per_batch=None, flops_per_token=None, labels=None):
        self.run_name = run_name
        self.tokens_per_batch = tokens_per_batch
        self.flops_per_token = flops_per_token
        self.labels = labels or {}
        self.run = None
        self.t_batch = None
        self.t_val = None

    def on_fit_start(self, trainer, pl_module):
        self.run = goodput.Run(self.run_name, rank=trainer.global_rank,
                               world_size=trainer.world_size,
                               resume_step=trainer.global_step or None,
                               labels=self.labels).start()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.t_batch = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.run is None or self.t_batch is None:
            return
        tokens = self.tokens_per_batch
        flops = tokens * self.flops_per_token if tokens and self.flops_per_token else None
        self.run.step(time.monotonic() - self.t_batch, tokens=tokens, model_flops=flops)

    def on_validation_start(self, trainer, pl_module):
        self.t_val = time.monotonic()

    def on_validation_end(self, trainer, pl_module):
        if self.run is not None and self.t_val is not None:
            self.run.phase_done("eval", time.monotonic() - self.t_val)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.run is not None:
            self.run.checkpoint(trainer.global_step)

    def on_fit_end(self, trainer, pl_module):
        if self.run is not None:
            self.run.end()
            self.run.close()
