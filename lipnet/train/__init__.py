"""Training: losses (rollout cost, imitation), the loop, checkpoints and run folders."""
