"""ultrachat: build large, diverse, multi-round instruction dialogue data with two LLMs."""

from .generate.runner import RunSummary, generate, generate_async
from .recipe import Recipe, RecipeError, load_recipe

__all__ = ["Recipe", "RecipeError", "RunSummary", "generate", "generate_async", "load_recipe"]
__version__ = "0.1.0"
