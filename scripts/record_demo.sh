#!/usr/bin/env bash
# Re-record the shipped demo cassettes (cassettes/demo/...).
#   stub-*          against harness's own stub server (not a model)
#   local-smollm2   against llama.cpp + SmolLM2-135M-Instruct on 127.0.0.1 (needs the 'local' extra)
#   local-gemma3    against llama.cpp + Gemma 3 270M on 127.0.0.1
#   local-smollm2-anthropic  the SmolLM2 server again, over Anthropic's /v1/messages
#   local-smollm2-{cohere-v1,cohere-v2,gemini}  the SmolLM2 server behind the bridge on 8083
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

"$py" -m harness serve-stub --port 8099 & pids+=($!)
sleep 1
"$py" -m harness replay datasets/demo.jsonl --record-mode all --no-progress \
  -p stub-cohere-v1 -p stub-cohere-v2

if [ "${1:-}" != "--stub-only" ]; then
  "$py" -m harness serve-local --model smollm2 --bridge-port 8083 & pids+=($!)
  "$py" -m harness serve-local --model gemma3 & pids+=($!)
  "$py" - <<'PY'
import time, httpx
for port in (8081, 8082, 8083):
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
PY
  "$py" -m harness replay datasets/demo.jsonl --record-mode all --no-progress --concurrency 1 \
    -p local-smollm2 -p local-gemma3 -p local-smollm2-anthropic \
    -p local-smollm2-cohere-v1 -p local-smollm2-cohere-v2 -p local-smollm2-gemini
  # SmolLM2 as judge of the whole demo (every provider graded, local-smollm2 vs local-gemma3
  # pairwise), its output constrained by the grammars in harness.toml's local-smollm2-judge:
  # a demo of the judge's mechanics, not a verdict. A question asked twice (the smollm2
  # providers gave the same replies) is asked once.
  rm -rf cassettes/demo/judge-local-smollm2 cassettes/demo/judge-local-smollm2-judge
  "$py" -m harness score tests/baselines/demo.jsonl --judge local-smollm2-judge \
    --pairwise local-smollm2,local-gemma3 --judge-max-tokens 16 --record-mode once
fi
