#!/usr/bin/env bash
# Issue 13's few-call student on a GPU, as one short device call after experiments/gpu_check.sh (same warm machine,
# its run directory still there), sized to a wall-clock deadline (default 240 s):
#   1. distil the check's teacher into a reflow student (`configs/pusht.py:flow`, the teacher's trailing DDIM-10 map,
#      STUDENT_STEPS steps, starting from the teacher's weights): the recipe that matched its teacher on the CPU-sized
#      network (experiments/frontier_alleps/: two ancestral calls within 0.01 of the teacher's DDPM-100);
#   2. evaluate, side by side with the paper's protocol (50 episodes, seeds 100000..100049, EMA), the student with
#      Euler-1, Euler-2 and ancestral-2, and the teacher's last checkpoint with trailing DDIM-10 (the map the student
#      learns; the teacher's DDPM-100 score of that checkpoint comes from the check's own evaluation); with
#      STUDENT_CHECKPOINTS=N > 1, also the student's N - 1 earlier checkpoints (every STUDENT_STEPS / N steps) with
#      ancestral-2, so one call shows whether a longer distillation closes the gap;
#   3. write gpu_distill_<device>.json: the student's steps/s and wall times, every score, and each student score
#      minus the teacher's DDPM-100 score (issue 13: >= 0.90 and within 0.03).
# OUT gets three files (the JSON, the log, the student's metrics); the student's run and the evaluations stay in
# WORK_DIR, so the device tool's 8-file limit on OUT holds.
#
#   TEACHER=/tmp/gpu_run OUT=$OUT bash experiments/gpu_distill.sh     # on the lent machine, after gpu_check.sh
#
# Environment (all optional): PYTHON (default: .venv/bin/python, else python3), TEACHER (the teacher's run directory,
# default /tmp/gpu_run), OUT (folder for the JSON, the log and the student's metrics), WORK_DIR (the student's run
# and the evaluations, default /tmp/gpu_distill; a rerun replaces them), DEADLINE_S (default 240), STUDENT_STEPS
# (default 1000), STUDENT_CHECKPOINTS (default 1: the last only), CONFIG (default configs/pusht.py:flow),
# EPISODES (default 50), MAX_STEPS (default 300), EXTRA (more --config.* flags for the student's dpjax.train).
# A CPU dry run with tiny sizes: train a smoke teacher (python -m dpjax.train --config=configs/pusht.py:smoke
# --workdir=/tmp/smoke_teacher), then TEACHER=/tmp/smoke_teacher CONFIG=configs/pusht.py:flow,smoke STUDENT_STEPS=4
# EPISODES=2 MAX_STEPS=10 DEADLINE_S=600 bash experiments/gpu_distill.sh
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/device_common.sh
source experiments/device_common.sh
deadline=${DEADLINE_S:-240}
teacher=${TEACHER:-/tmp/gpu_run}
config=${CONFIG:-configs/pusht.py:flow}
student_steps=${STUDENT_STEPS:-1000}
student_checkpoints=${STUDENT_CHECKPOINTS:-1}
positive='^[1-9][0-9]*$'
if ! [[ "$student_steps" =~ $positive && "$student_checkpoints" =~ $positive ]] \
    || [ $(( student_steps % student_checkpoints )) != 0 ]; then
  echo "STUDENT_STEPS=$student_steps and STUDENT_CHECKPOINTS=$student_checkpoints: give a positive step count and" \
       "a positive divisor of it" >&2
  exit 1
fi
student_every=$(( student_steps / student_checkpoints ))
extra=${EXTRA:-}
out=${OUT:-experiments/gpu_distill/$(date -u +%Y%m%dT%H%M%SZ)}
work=${WORK_DIR:-/tmp/gpu_distill}
rm -rf "$work/student" "$work"/eval_*                     # a rerun starts a fresh student
mkdir -p "$out" "$work"
student=$work/student
log="$out/distill.log"

teacher_step=$(ls "$teacher/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1)
if [ -z "$teacher_step" ]; then
  say "no checkpoint in $teacher/checkpoints: run experiments/gpu_check.sh first (RUN_DIR=$teacher) or set TEACHER"
  exit 1
fi
eval_reserve=75                                    # four evaluations side by side, start-up and compile included

say "1/3 distil $teacher (step $teacher_step) into a student: $student_steps steps"
train_start=$(date +%s)
timeout $(( $(left) - eval_reserve )) "$python" -m dpjax.train --config="$config" --workdir="$student" \
    --config.distill.teacher="$teacher" --config.distill.teacher_step="$teacher_step" \
    --config.distill.teacher_timestep_spacing=trailing --config.diffusion.num_inference_steps=1 \
    --config.train.num_steps="$student_steps" --config.optim.warmup_steps=50 \
    --config.train.checkpoint_every="$student_every" --config.train.val_every="$student_every" \
    --config.train.keep_checkpoints="$student_checkpoints" --config.train.rollout_every=0 $extra 2>&1 \
    | tr '\r' '\n' | grep -v "^train: .*step" | tee -a "$log"
train_rc=${PIPESTATUS[0]}
train_s=$(( $(date +%s) - train_start ))
say "distillation ended (exit status $train_rc, ${train_s} s)"
if [ ! -d "$student/checkpoints" ]; then
  say "the student has no checkpoint, so there is nothing to evaluate: stopping (its error is in $log)"; exit 1
fi

say "2/3 evaluate the student (euler:1 euler:2 ancestral:2; its earlier checkpoints ancestral:2) and the teacher" \
    "(trailing ddim:10) side by side"
eval_start=$(date +%s)
rollout() {   # rollout NAME ARGS...: one evaluation in the background, its eval.json in WORK_DIR/eval_NAME/
  local name=$1; shift
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 timeout $(( $(left) + 20 )) "$python" -m dpjax.rollout "$@" \
      --num_episodes="$episodes" --max_steps="$max_steps" --num_videos=0 --out="$work/eval_$name" \
      > "$work/eval_$name.log" 2>&1 &
}
for setting in euler:1 euler:2 ancestral:2; do
  rollout "student_${setting/:/}" --checkpoint="$student" --sampler="${setting%%:*}" \
      --num_inference_steps="${setting##*:}"
done
for step in $(ls "$student/checkpoints" | grep -E '^[0-9]+$' | sort -n | head -n -1); do   # the earlier ones
  rollout "student_ancestral2_step$step" --checkpoint="$student" --step="$step" --sampler=ancestral \
      --num_inference_steps=2
done
rollout teacher_trailing_ddim10 --checkpoint="$teacher" --step="$teacher_step" --sampler=ddim \
    --num_inference_steps=10 --timestep_spacing=trailing
wait
for f in "$work"/eval_*.log; do tr '\r' '\n' < "$f" | grep -v "^rollout: " | tail -3 | tee -a "$log"; done
eval_s=$(( $(date +%s) - eval_start ))
[ -f "$student/metrics.jsonl" ] && cp "$student/metrics.jsonl" "$out/student_metrics.jsonl"

"$python" - "$out" "$work" "$teacher" "$teacher_step" "$train_s" "$eval_s" "$(elapsed)" "$train_rc" <<'EOF' 2>&1 \
    | tee -a "$log"
"""Collects the student's numbers and its gap to the teacher's DDPM-100 score into one JSON file."""
import json, pathlib, sys
import jax
sys.path.insert(0, "experiments/bench")
import run_summary
out, work, teacher = (pathlib.Path(p) for p in sys.argv[1:4])
student = work / "student"
teacher_step = int(sys.argv[4])
train_s, eval_s, total_s, train_rc = (float(x) for x in sys.argv[5:])

def load(path):
  return json.loads(path.read_text()) if path.exists() else None

summary = run_summary.summarize(student)
teacher_ddpm100 = load(teacher / f"eval_step_{teacher_step}" / "eval.json")
reference = teacher_ddpm100["mean_score"] if teacher_ddpm100 else None
evals = {p.name[len("eval_"):]: load(p / "eval.json") for p in sorted(work.glob("eval_*")) if p.is_dir()}
device = jax.devices()[0]
record = {
    "device": {"platform": device.platform, "device_kind": device.device_kind, "jax": jax.__version__},
    "teacher": str(teacher), "teacher_step": teacher_step, "teacher_ddpm100_mean_score": reference,
    "student_config": summary["config"], "student_exit_status": int(train_rc),
    "student_wall_s": train_s, "eval_wall_s": eval_s, "total_wall_s": total_s,
    "student_steps_per_s": summary["train_steps_per_s"], "final_val_loss_ema": summary["final_val_loss_ema"],
    "eval": {name: None if e is None else {k: e.get(k) for k in ("mean_score", "success_rate", "num_episodes",
                                                                 "network_calls_per_chunk", "wall_seconds")}
             for name, e in evals.items()},
    "minus_teacher_ddpm100": {name: None if e is None or reference is None else e["mean_score"] - reference
                              for name, e in evals.items()},
}
path = out / run_summary.device_file_name("gpu_distill", device.device_kind)
path.write_text(json.dumps(record, indent=2))
print(json.dumps({k: record[k] for k in ("teacher_ddpm100_mean_score", "student_wall_s", "eval_wall_s",
                                          "student_steps_per_s", "minus_teacher_ddpm100")}, indent=2))
print(json.dumps({name: e and e["mean_score"] for name, e in record["eval"].items()}))
print(f"wrote {path}")
EOF
say "done"
