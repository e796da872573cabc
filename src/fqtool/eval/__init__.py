"""Evaluation: embedding extraction, verification protocols, error-versus-reject curves."""
