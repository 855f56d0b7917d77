#!/bin/bash
# Latent-PMRF on N nodes × 8 GPUs with torchrun (no SLURM). Run the same command on every node:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash configs/launch/torchrun.sh     (on node0)
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash configs/launch/torchrun.sh     (on node1)
# torchrun starts one process per GPU; Lightning's TorchElasticEnvironment reads its variables.
# Global batch = data.batch_size × 8 × NNODES (× accumulate_grad_batches): 4 × 8 × 2 = 64.
# After a crash or pre-emption, run the same command again: it resumes from the newest intact
# checkpoint of trainer.output_dir.
set -euo pipefail
NNODES=${NNODES:-1}
GPUS=${GPUS:-8}
CONFIG=${CONFIG:-configs/latent_pmrf/ffhq512_c32.yaml}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
# the project's venv (make venv), unless PYTHON_BIN names another interpreter with the dependencies
python="${PYTHON_BIN:-$(make -s --no-print-directory -C "$repo" print-venv)/bin/python}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m torch.distributed.run --nnodes="$NNODES" --node-rank="${NODE_RANK:-0}" --nproc-per-node="$GPUS" \
    --master-addr="${MASTER_ADDR:-127.0.0.1}" --master-port="${MASTER_PORT:-29500}" \
    -m latent_pmrf train "$CONFIG" trainer.devices="$GPUS" trainer.num_nodes="$NNODES" \
    trainer.strategy=ddp data.batch_size=$((64 / (GPUS * NNODES))) "$@"
