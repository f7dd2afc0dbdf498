"""Training: objectives (rollout cost, imitation), the plan, the loop, checkpoints and run folders."""
