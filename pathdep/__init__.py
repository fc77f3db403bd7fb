"""pathdep's ground floor: what every package shares, with no torch or JAX import.

- :mod:`pathdep.io`: the one set of atomic writers (file, JSON, CSV, figure, folder) and the
  canonical-JSON content hash.
- :mod:`pathdep.workers`: process pools whose workers die with the process that started them.
- :mod:`pathdep.configs`: frozen config dataclasses to and from TOML/JSON (typed, unknown keys
  refused), the config hash, and the resolved config saved beside every run.

``theory``, ``sim`` and ``llm`` stand on this floor; the main job (:mod:`study`) stands on all
three. Nothing here imports any of them.
"""
