#!/bin/bash
cd /work/main
for v in lowdim transformer image image_transformer; do
  echo "=== $v start $(date -u +%T)"
  s=$(date +%s)
  timeout 660 .venv/bin/python -m dpjax.bench --variants=$v --steps=3 --repeats=2 --samplers=ddim:10,ddpm:100 --sample_batch_sizes=1,50 --out=/tmp/bench_cpu/$v.json 2>&1 | grep -v -e libtpu -e "^I1"
  echo "=== $v rc=${PIPESTATUS[0]} wall $(( $(date +%s) - s )) s end $(date -u +%T)"
done
