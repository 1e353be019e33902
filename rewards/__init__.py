"""Rule-based math reward functions for TRL's GRPOTrainer."""
