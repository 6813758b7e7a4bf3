"""Shared networks, layers, losses, the training loop, training sets and windowed inference."""
