"""The cross-encoder: a BERT-family model with one logit per (candidate, history) pair.

``CrossEncoder`` builds or loads the transformer (optionally cut to its first layers, optionally
wrapped in LoRA for training); ``Reranker`` is the serving object: a saved cross-encoder plus its
calibrator, on CPU (fp32 or dynamic int8) or GPU (bf16).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranking.calibrate import Calibrator
from ranking.config import RankingConfig
from ranking.pairs import PairTokenizer
from rec.errors import ArtifactError

log = logging.getLogger(__name__)

MARKER = "ranking.json"


def _autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CrossEncoder:
    """A sequence-classification transformer (num_labels=1) and its pair tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, cfg: RankingConfig, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = device
        self.pairs = PairTokenizer(
            tokenizer,
            cfg.max_tokens,
            cfg.candidate_tokens,
            cfg.history_item_tokens,
            cfg.history_items,
        )

    @classmethod
    def from_pretrained(
        cls, path: str, cfg: RankingConfig, device: str = "cpu", for_training: bool = True
    ) -> CrossEncoder:
        """Load ``path`` (a save dir) as a one-logit classifier; cut layers; add LoRA if asked."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot load cross-encoder ({exc})") from None
        if for_training and cfg.num_layers:
            _truncate_layers(model, cfg.num_layers)
        if for_training and cfg.finetune == "full" and cfg.trainable_layers:
            _freeze_below(model, cfg.trainable_layers)
        if for_training and cfg.finetune == "lora":
            from peft import LoraConfig, TaskType, get_peft_model

            lcfg = LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=["query", "key", "value", "dense"],
            )
            model = get_peft_model(model, lcfg)
        model.to(device)
        return cls(model, tok, cfg, device)

    def forward(
        self, history_texts: Sequence[Sequence[str]], candidate_texts: Sequence[str]
    ) -> torch.Tensor:
        """Logits [n] (with gradients when the model is in training mode)."""
        batch = {
            k: v.to(self.device)
            for k, v in self.pairs.encode(history_texts, candidate_texts).items()
        }
        with _autocast(self.device):
            out = self.model(**batch).logits
        return out.float().squeeze(-1)

    @torch.inference_mode()
    def logits(
        self,
        history_texts: Sequence[Sequence[str]],
        candidate_texts: Sequence[str],
        batch_size: int = 64,
    ) -> np.ndarray:
        """Logits of many pairs, in batches, as float32 numpy."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for i in range(0, len(candidate_texts), batch_size):
            out.append(
                self.forward(history_texts[i : i + batch_size], candidate_texts[i : i + batch_size])
                .cpu()
                .numpy()
            )
        if was_training:
            self.model.train()
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trainable state (for keeping the best checkpoint)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save(self, out_dir: str | Path) -> None:
        """``save_pretrained`` of the plain transformer (LoRA merged in) and its tokenizer."""
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            self.model = model
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


def _truncate_layers(model: Any, n: int) -> None:
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    if n < len(layers):
        base.encoder.layer = torch.nn.ModuleList(list(layers)[:n])
        model.config.num_hidden_layers = n


def _freeze_below(model: Any, top: int) -> None:
    """Freeze the embeddings and every encoder layer but the top ``top`` (no backward there)."""
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    for p in base.embeddings.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[: max(0, len(layers) - top)]:
        for p in layer.parameters():
            p.requires_grad_(False)


class Reranker:
    """A trained reranker: ``predict(history_texts, candidate_texts) -> click probabilities``."""

    def __init__(self, encoder: CrossEncoder, calibrator: Calibrator, meta: dict[str, Any]) -> None:
        self.encoder = encoder
        self.calibrator = calibrator
        self.meta = meta
        self.cfg = encoder.cfg

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "cpu",
        quantize: str | None = None,
        num_threads: int = 0,
    ) -> Reranker:
        """Load a saved reranker dir; ``quantize`` ("none" | "int8", default from its config)
        applies dynamic int8 quantisation on CPU; on CUDA the model runs in bf16."""
        from rec.artifacts import read_json
        from rec.config import from_dict

        path = Path(path)
        if not (path / MARKER).is_file():
            raise ArtifactError(f"{path}: not a reranker (no {MARKER})")
        meta = read_json(path / MARKER)
        cfg = from_dict(RankingConfig, meta["config"])
        if num_threads or cfg.num_threads:
            torch.set_num_threads(num_threads or cfg.num_threads)
        enc = CrossEncoder.from_pretrained(str(path), cfg, device=device, for_training=False)
        enc.model.eval()
        q = quantize or cfg.quantize
        if q == "int8" and device == "cpu":
            enc.model = quantize_int8(enc.model)
        meta["serving"] = (
            "int8"
            if (q == "int8" and device == "cpu")
            else ("bf16" if device.startswith("cuda") else "fp32")
        )
        fitted = meta.get("calibrated_precision")
        if fitted and fitted != meta["serving"]:
            log.warning(
                "reranker calibrated on %s logits but served in %s: probabilities and rank "
                "fusion may be off (recalibrate with a matching ranking.quantize)",
                fitted,
                meta["serving"],
            )
        return cls(enc, Calibrator.from_dict(meta["calibrator"]), meta)

    def logits(
        self,
        history_texts: Sequence[Sequence[str]],
        candidate_texts: Sequence[str],
        batch_size: int = 64,
    ) -> np.ndarray:
        return self.encoder.logits(history_texts, candidate_texts, batch_size)

    def predict(
        self,
        history_texts: Sequence[str] | Sequence[Sequence[str]],
        candidate_texts: Sequence[str],
        ranks: Sequence[int] | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Click probabilities of candidates for one history (texts, most recent first) or one
        history per candidate; ``ranks`` are the candidates' 0-based retrieval ranks (default:
        list order)."""
        hist = _per_pair(history_texts, len(candidate_texts))
        logits = self.logits(hist, candidate_texts, batch_size)
        r = np.arange(len(candidate_texts)) if ranks is None else np.asarray(ranks)
        return self.calibrator.transform(logits, r).astype(np.float32)


def _per_pair(history_texts: Sequence[Any], n: int) -> list[Sequence[str]]:
    if len(history_texts) and not isinstance(history_texts[0], str):
        if len(history_texts) != n:
            raise ValueError("one history per candidate expected")
        return list(history_texts)
    return [history_texts] * n  # type: ignore[list-item]


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every Linear layer (CPU inference)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def write_meta(
    out_dir: Path, cfg: RankingConfig, calibrator: Calibrator, extra: dict[str, Any]
) -> None:
    """Write ranking.json (config, calibrator, metrics): the marker of a complete reranker dir."""
    from rec.artifacts import write_json
    from rec.config import to_dict

    write_json(
        out_dir / MARKER, {"config": to_dict(cfg), "calibrator": calibrator.to_dict(), **extra}
    )
