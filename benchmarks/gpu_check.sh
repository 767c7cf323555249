#!/usr/bin/env bash
# The GPU checks, as run on a CUDA machine with PyTorch, transformers and peft already installed and
# no network: missing packages travel as wheels in .whl/ (bitsandbytes, datasketch, rouge-score, nltk,
# defusedxml). Runs the CUDA tests (tests/test_gpu.py, tests/test_devices.py, and the training tests
# with `auto` picking the GPU), then benchmarks/gpu_train.py (GPU_BENCH=0: not). Logs go to $OUT (default ./gpu-out).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
if python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .; then
  export PYTHONPATH=/tmp/site
else
  echo "could not install ragtune itself: running it from src/"; export PYTHONPATH=/tmp/site:$PWD/src
fi
nvidia-smi -L
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)"
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_devices.py \
  tests/test_finetune_train.py -k "not raft" 2>&1 | tee "$OUT/tests.log" | grep -v "Loading weights\|Writing model"
[ "${GPU_BENCH:-1}" = 0 ] && exit 0  # GPU_BENCH=0: the tests only
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/gpu_train.py --steps 10 --json "$OUT/gpu_train.json" 2>&1 \
  | grep -v "Loading weights\|Writing model" | tee "$OUT/gpu_train.log"
