"""The naive alternative to skipping late actions, for comparison (a prototype, not in dpjax): the chunk planned
d steps early is executed from its first action when it arrives, so every action runs d steps after the time it
was planned for.

    python experiments/latency/stale.py --run=runs/quickstart --latency_steps=4    # -> experiments/latency/stale_4
"""
import argparse
import json
import pathlib

from dpjax import checkpoint, control, rollout

HERE = pathlib.Path(__file__).resolve().parent


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default="runs/quickstart")
  parser.add_argument("--latency_steps", type=int, required=True)
  parser.add_argument("--num_episodes", type=int, default=200)
  args = parser.parse_args()
  plan = control.RecedingHorizonController._plan   # pylint: disable=protected-access
  control.RecedingHorizonController._plan = lambda self, skip: plan(self, 0)   # late actions kept, not skipped
  out = HERE / f"stale_{args.latency_steps}"
  result = rollout.evaluate(checkpoint.load_policy(args.run), num_episodes=args.num_episodes, out_dir=out,
                            num_videos=0, show_progress=False, latency_steps=args.latency_steps)
  result["late_actions"] = "executed (experiments/latency/stale.py), not skipped"
  (out / "eval.json").write_text(json.dumps(result, indent=2))
  print(json.dumps({k: result[k] for k in ("mean_score", "latency_steps", "late_actions")}))


if __name__ == "__main__":
  main()
