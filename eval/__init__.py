"""eval stage: leave-one-out full-ranking metrics (``metrics``), floors (``baselines``), the
evaluator over run tables and score functions (``evaluate``) and the written report (``report``).
Knows nothing about models."""
