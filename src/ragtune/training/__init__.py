"""Training data, hard-negative mining and fine-tuning of the embedding model."""
