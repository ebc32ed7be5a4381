"""LangChain adapter for confroute (in progress)."""
