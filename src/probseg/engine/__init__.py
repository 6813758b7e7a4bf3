"""The method contract, the draw loop every method shares, the Python API and tuning."""
