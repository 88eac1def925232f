"""Pretraining in several processes (GPUs or machines) with torchrun and DDP.

Where it runs is configuration of the machine, never a param:

  TRANSFERLAB_TORCHRUN="--nproc-per-node 2"   the pretrain stage starts itself under
      `python -m torch.distributed.run <these options> stages/pretrain.py ...`
      (add --nnodes, --node-rank, --rdzv-endpoint for several machines);
  or launch the stage script with torchrun yourself: it sees WORLD_SIZE and RANK.

The recipe stays the single-process one: every optimizer step sees the same
global batch of `pretrain.batch_size` images (the same shuffled order), split
evenly across the processes (batch_size / world_size each; the size must
divide), and DDP averages the gradients of the per-process means, which is the
gradient of the global mean; the learning rate is `pretrain.lr` unchanged.
Batch norm becomes SyncBatchNorm on GPUs (statistics over the global batch);
on CPU (gloo), PyTorch has no SyncBatchNorm and each process normalises its own
part. Only rank 0 logs (dvclive), shows progress, writes checkpoints and writes
the stage's outputs.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass

from transferlab.config.spec import ConfigurationError, ParamsError

TORCHRUN_ENV = "TRANSFERLAB_TORCHRUN"


class DistributedError(ConfigurationError):
    """The torchrun configuration cannot run here; stops the stage before any work."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def relaunch_under_torchrun(argv: list[str]) -> None:
    """With TRANSFERLAB_TORCHRUN set, replace this process by torchrun running the same
    script with the same arguments; a no-op when unset or already under torchrun."""
    options = os.environ.get(TORCHRUN_ENV, "").strip()
    if not options or launched_by_torchrun():
        return
    command = [sys.executable, "-m", "torch.distributed.run", *shlex.split(options), *argv]
    print(f"{TORCHRUN_ENV}: {shlex.join(command)}", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)


def current_world():
    """The World of this process when torchrun started it and DDP is set up, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))


def is_main_process() -> bool:
    """True outside torchrun, and on rank 0 under it: the process that writes files."""
    world = current_world()
    return world is None or world.main


def setup(batch_size: int, batch_size_key: str) -> World | None:
    """Join the torchrun job (gloo on CPU, nccl on GPU) after checking it can run here;
    None when the process was not started by torchrun."""
    if not launched_by_torchrun():
        return None
    import torch
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ.get("LOCAL_RANK", 0)),
                  int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
    if batch_size % world.size:
        raise ParamsError(f"params: {batch_size_key} = {batch_size} is not allowed under "
                          f"torchrun with {world.size} processes; expected a multiple of "
                          f"{world.size} (each process takes an equal part of every batch)")
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if world.local_size > gpus:
            raise DistributedError(f"torchrun started {world.local_size} processes on this "
                                   f"node but it has {gpus} GPU(s); use --nproc-per-node "
                                   f"{gpus} or fewer")
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return world


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 has written the outputs before any process leaves
        dist.destroy_process_group()


def sharded(batches, world: World):
    """`batches` (loop.Batches) with every global batch split across the processes."""
    return dataclasses.replace(batches, shard=(world.rank, world.size))


def wrap(model, world: World, device):
    """What `train.fit` trains under torchrun: the network with its forward pass
    (the embeddings the objective asks for) through DistributedDataParallel."""
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                     for m in model.modules()):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    class Embeddings(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.iteration_embeddings(x)

    class DataParallelNet(nn.Module):
        """The network's interface; training passes go through DDP so their backward
        averages the gradients across processes."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.ddp = DistributedDataParallel(
                Embeddings(net), device_ids=[device.index or 0] if device.type == "cuda"
                else None, broadcast_buffers=False)  # rank 0's eval passes need no peers

        def iteration_embeddings(self, x):
            if torch.is_grad_enabled() and self.training:
                return self.ddp(x)
            return self.net.iteration_embeddings(x)

        @property
        def head(self):
            return self.net.head

        @property
        def num_iterations(self):
            return getattr(self.net, "num_iterations", 1)

        def forward(self, x):
            return self.net(x)

        def outputs(self, x):
            return self.net.outputs(x)

        def state_dict(self, *args, **kwargs):
            return self.net.state_dict(*args, **kwargs)

        def load_state_dict(self, state, *args, **kwargs):
            return self.net.load_state_dict(state, *args, **kwargs)

    return model, DataParallelNet(model)
