"""Two-tower retrieval stage: LM item tower + causal-transformer user tower (see retrieval/model.py)."""
