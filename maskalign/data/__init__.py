"""Datasets in the real layouts, and the built-in demo world that writes small copies of them."""
