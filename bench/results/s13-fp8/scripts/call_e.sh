[ -d /tmp/site/opentelemetry ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
for i in 1 2; do
timeout -s KILL 200 python3 .k4/fp8probe.py qwen3-8b $OUT/probe-8b-$i.json > $OUT/probe-8b-$i.log 2>&1
python3 - $i <<'PY'
import json, os, sys
d=json.load(open(os.environ["OUT"]+f"/probe-8b-{sys.argv[1]}.json"))
rows={}
for l in d['lines']:
    rows.setdefault(l['variant'],{})[l['projection']]=(l['us'],l['tb_per_s'])
for v,r in sorted(rows.items(), key=lambda kv: sum(x[0] for x in kv[1].values())):
    print(f"{v:26s} {sum(x[0] for x in r.values()):7.2f}", "  ".join(f"{p}:{u:6.2f}({t:.2f})" for p,(u,t) in r.items()))
PY
done
