"""Recovering accuracy after decomposition: head refit on cached features, and fine-tuning."""
