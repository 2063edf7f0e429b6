"""Corpus formats, cleaning and statistics."""
