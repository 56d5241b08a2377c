"""Configuration of the cross-encoder reranking stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RankingConfig:
    """Cross-encoder reranker over (candidate text, history text) pairs.

    Defaults are sized for a shared 2-core CPU (see BENCHMARKS.md): 48-token pairs, the first
    2 of MiniLM's 6 layers with the top one (and the head) trained, a few thousand training
    groups, one torch thread per process.
    """

    # --- model ------------------------------------------------------------------------------
    model: str = "packaged:all-MiniLM-L6-v2"  # local path, hub name, or the packaged MiniLM
    num_layers: int = 2  # keep the first N encoder layers (0 = all): 2 of 6 = 3x cheaper on CPU
    finetune: Literal["full", "lora"] = "full"
    trainable_layers: int = 1  # full fine-tuning of the top N layers + head only (0 = all)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    # --- pair text --------------------------------------------------------------------------
    max_tokens: int = 48  # whole pair, special tokens included
    candidate_tokens: int = 16  # the candidate item's text is cut to this many tokens
    history_item_tokens: int = 12  # each history item's text is cut to this many tokens
    history_items: int = 8  # most recent items considered; the token budget cuts further
    history_field: Literal["title", "text"] = "title"  # which item column describes history
    candidate_field: Literal["title", "text"] = "text"
    # --- candidates and negatives -------------------------------------------------------------
    retrieve_top: int = 200  # candidates asked from retrieval
    rerank_top: int = 20  # of which the reranker reorders the first N (the served list)
    negatives: int = 7  # negatives per positive in a training group
    hard_frac: float = 0.5  # share of negatives drawn from the retriever's top `hard_pool`
    popular_frac: float = 0.25  # share drawn by popularity; the rest uniformly at random
    hard_pool: int = 50
    positions_per_user: int = 3  # training targets per user: the most recent train positions
    max_train_users: int = 0  # 0 = all
    # --- training ---------------------------------------------------------------------------
    loss: Literal["bce", "listwise"] = "listwise"
    lr: float = 1e-4  # full fine-tuning; LoRA uses lora_lr
    lora_lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    batch_groups: int = 4  # user groups (1 positive + `negatives`) per optimizer step
    epochs: int = 1
    max_steps: int = 0  # 0 = epochs decide
    max_minutes: float = 0.0  # wall-clock budget for the training loop; 0 = unlimited
    eval_every: int = 150  # steps between validation runs (and once at the end of each epoch)
    patience: int = 3  # validation runs without improvement before stopping
    valid_users: int = 150  # validation users for early stopping (0 = all)
    eval_batch_size: int = 64
    # --- calibration, fusion and serving -------------------------------------------------------
    calibration: Literal["platt", "temperature", "isotonic", "none"] = "platt"
    use_retrieval_rank: bool = True  # fuse log(1+retrieval rank) with the logit (fitted on valid)
    # CPU serving path; GPU serves bf16. int8 is ~2x faster but its logit noise (~0.003) can
    # exceed an under-trained model's logit spread: calibration is fitted at this precision.
    quantize: Literal["none", "int8"] = "none"
    # torch CPU threads; 0 = leave torch's default (1 was fastest on the busy shared box)
    num_threads: int = 1
