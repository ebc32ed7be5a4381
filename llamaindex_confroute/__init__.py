"""LlamaIndex adapter for confroute (in progress)."""
