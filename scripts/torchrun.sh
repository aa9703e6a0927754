#!/usr/bin/env bash
# DDP without Slurm: torchrun starts one training process per device on this node.
#   scripts/torchrun.sh configs/sequence/gru.yaml -c configs/trainer/ddp.yaml           # every GPU here
#   NPROC_PER_NODE=2 scripts/torchrun.sh configs/sequence/gru.yaml -c configs/trainer/ddp_cpu.yaml   # CPUs
# Several nodes: run it on each, with the same MASTER_ADDR (node 0's address) and port:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/torchrun.sh configs/sequence/gru.yaml \
#       -c configs/trainer/multi_node.yaml --trainer.num_nodes 2     # on node 0; NODE_RANK=1 on node 1
# trainer.devices must equal NPROC_PER_NODE and trainer.num_nodes NNODES (checked before training).
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: [NPROC_PER_NODE=N NNODES=N NODE_RANK=I MASTER_ADDR=HOST] $0 CONFIG.yaml [flags]" >&2
    exit 2
fi
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # torch would give every process all the cores
exec "$PYTHON" -m torch.distributed.run \
    --nproc-per-node "${NPROC_PER_NODE:-gpu}" \
    --nnodes "${NNODES:-1}" --node-rank "${NODE_RANK:-0}" \
    --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
    -m project fit -c "$@"
