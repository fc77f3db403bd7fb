"""Data files shipped with pathdep.llm (read with importlib.resources)."""
