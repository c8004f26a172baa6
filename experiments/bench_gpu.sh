#!/usr/bin/env bash
# The GPU benchmark set: every row prints a table with both sides measured in the same run.
#
#   bash experiments/bench_gpu.sh [OUT_DIR]        # on a machine with jaxrl and jax's GPU backend installed
#   QUICK=1 bash experiments/bench_gpu.sh          # tiny sizes: checks that every step runs (e.g. on a CPU)
#
# Each step has its own time limit (seconds, scaled by STEP_TIMEOUT_SCALE, default 1) so one slow or broken
# step does not take the others with it; the log of each step is written to OUT_DIR (default results/gpu).
# Steps run in order of what the GPU goals name: MNIST-sized epoch, 64-model sweep, DQN, then the digits grid.
# ONLY="info mlp_core dqn_default" runs just the steps named.
set -u
out=${1:-results/gpu}
mkdir -p "$out"
scale=${STEP_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if [ "${QUICK:-0}" = 1 ]; then
  mlp="--synthetic-mnist --epochs 1 --repeats 1"
  core="--models 1 2 --epochs 1 --n-samples 2000"
  pqn="--num-envs 8 --steps 2048 --rounds 1"
  pqn_default=$pqn  # the default preset at the same tiny size
  sweep="--mnist-sized --models 4 --max-iter 1 --sklearn-fits 1 --n-samples 2000"
  digits="--max-iter 5 --cv 2"
  dqn="--num-envs 8 --steps 2000 --rounds 1"
  dqn_seeds="--num-envs 8 --seeds 2 --rounds 1 --steps-per-call 100 --learning-starts 200"
  scaling="--models 4 --epochs 2 --dqn-steps 300"
else
  mlp="--synthetic-mnist --epochs 5 --repeats 3"
  core="--models 1 64 --epochs 10"
  pqn="--num-envs 8 --steps 32768 --rounds 1"
  pqn_default="--num-envs 128 --steps 32768 --rounds 1"
  sweep="--mnist-sized --models 64 --max-iter 5 --sklearn-fits 2"
  digits="--max-iter 100 --cv 3"
  dqn="--num-envs 8 --steps 20000 --rounds 1"
  dqn_seeds="--num-envs 8 --seeds 16 --rounds 3 --update-every 2 --skip-python"
  scaling=""
fi
# one process per GPU: SCALING_PROCESSES="1 2 4" on a machine with 4 GPUs
scaling_processes=${SCALING_PROCESSES:-1}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$((limit * scale))" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
}

step info 60 "$py" -c "import jax, platform, os; print(platform.platform(), os.cpu_count(), 'CPUs'); print('jax', jax.__version__, jax.devices())"
step mlp_core 120 "$py" experiments/bench_mlp_epoch.py $core --unroll 1 8 --hlo
# the same epoch with the whole minibatch loop captured as one CUDA graph (XLA command buffers incl. WHILE)
graphs="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL"
graphs="$graphs --xla_gpu_graph_min_graph_size=1"
step mlp_core_graphs 120 env XLA_FLAGS="${XLA_FLAGS:-} $graphs" \
  "$py" experiments/bench_mlp_epoch.py $core --unroll 1 --hlo
step mlp_epoch 120 "$py" experiments/bench_mlp.py $mlp
step mlp_sweep 150 "$py" experiments/bench_mlp_grid.py $sweep
step dqn_default 180 "$py" experiments/bench_dqn.py --preset pqn-ego-e128 $pqn_default
step dqn_pqn_ego 180 "$py" experiments/bench_dqn.py --preset pqn-ego $pqn
step dqn_tuned 150 "$py" experiments/bench_dqn.py --preset tuned $dqn
step dqn_objects 150 "$py" experiments/bench_dqn.py --preset objects $dqn
step dqn_planes 150 "$py" experiments/bench_dqn.py --preset objects --obs-encoding planes $dqn
step dqn_seeds 150 "$py" experiments/bench_dqn_xla.py $dqn_seeds
step mlp_digits_grid 120 "$py" experiments/bench_mlp_grid.py $digits
step scaling 300 "$py" experiments/bench_scaling.py --processes $scaling_processes $scaling
