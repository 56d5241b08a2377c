"""Sentence pairs for the cross-encoder: (candidate item text, user history text), with labels.

The history side is the texts of the user's items, most recent first, cut to a token budget.
Labels come from behaviour: the real next item is the positive; training negatives mix hard ones
(the candidate function's top items, never the positive), popular and uniformly random ones.
Time-safe by construction: a group's history holds only events before its target.

Training groups: every training-sequence position (targets inside ``split.train``, the train
part's last item included; the most recent ``positions_per_user`` per user). Validation groups:
``split.valid`` targets with history = train. Test groups: ``split.test`` with history = train +
valid. Serving (validation, test) groups hold the candidate function's top ``rerank_top`` items
in retrieval order; the target is never inserted, so a target retrieval missed has no positive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from rec.data.dataset import Split, histories_for, sequences

# histories (item ids in time order, one list per user), k -> top-k item ids per user, best first,
# with the history's own items already removed.
CandidateFn = Callable[[list[list[str]], int], list[list[str]]]


@dataclass
class Group:
    """One user query: a history, the candidates to score and their click labels."""

    user_id: str
    history: list[str]  # item ids in time order, only events before the target
    target: str | None
    candidates: list[str]
    labels: np.ndarray  # float32 [len(candidates)], 1.0 for the target
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # retrieval


def item_texts(items: pl.DataFrame, field_name: str) -> dict[str, str]:
    """item_id -> text of column ``field_name`` (falls back to ``text``, then ``title``, then id)."""
    ids = items["item_id"].to_list()
    cols = [c for c in (field_name, "text", "title") if c in items.columns]
    values = [items[c].to_list() for c in cols]
    out = {}
    for i, item in enumerate(ids):
        text = next((v[i] for v in values if v[i]), None)
        out[item] = str(text) if text else str(item)
    return out


def popularity(train: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """(item ids, click counts) over the training part, most popular first."""
    counts = train.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
    return counts["item_id"].to_list(), counts["len"].to_numpy().astype(np.float64)


def training_examples(
    split: Split,
    positions_per_user: int,
    max_users: int = 0,
    rng: np.random.Generator | None = None,
) -> list[tuple[str, list[str], str]]:
    """(user, history, target) for training-sequence positions (history = events before target).

    Per user the most recent ``positions_per_user`` positions of the train part are used (its last
    item included); ``max_users`` > 0 subsamples users with ``rng``.
    """
    seqs = sequences(split.train)
    users = sorted(seqs)
    if max_users and len(users) > max_users:
        rng = rng or np.random.default_rng(0)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    out = []
    for u in users:
        s = seqs[u]
        first = max(1, len(s) - positions_per_user) if positions_per_user > 0 else 1
        for t in range(first, len(s)):
            out.append((u, list(s[:t]), s[t]))
    return out


def eval_examples(
    split: Split, part: str, max_users: int = 0, rng: np.random.Generator | None = None
) -> list[tuple[str, list[str], str]]:
    """(user, history, target) for ``part`` ("valid": history = train; "test": train + valid)."""
    hist, targets = histories_for(split, part)
    users = sorted(targets)
    if max_users and len(users) > max_users:
        rng = rng or np.random.default_rng(0)
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    return [(u, hist[u], targets[u]) for u in users]


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def training_groups(
    examples: Sequence[tuple[str, list[str], str]],
    candidate_fn: CandidateFn,
    pop_items: list[str],
    pop_counts: np.ndarray,
    all_items: list[str],
    negatives: int,
    hard_frac: float,
    popular_frac: float,
    hard_pool: int,
    rng: np.random.Generator,
    batch: int = 512,
) -> list[Group]:
    """One group per example: the target first, then ``negatives`` sampled negatives.

    Hard negatives come from ``candidate_fn`` over the time-safe history; no negative is the
    target or an item of the history.
    """
    n_hard = int(round(negatives * hard_frac))
    n_pop = int(round(negatives * popular_frac))
    pop_p = pop_counts / pop_counts.sum() if len(pop_counts) else pop_counts
    groups: list[Group] = []
    for chunk in _chunks(len(examples), batch):
        part = [examples[i] for i in chunk]
        cands = candidate_fn([h for _, h, _ in part], hard_pool + 1)
        for (user, history, target), ranked in zip(part, cands):
            excluded = set(history)
            excluded.add(target)
            chosen: list[str] = []

            _sample([c for c in ranked[:hard_pool] if c != target], n_hard, excluded, chosen, rng)
            _sample(pop_items, min(n_pop, negatives - len(chosen)), excluded, chosen, rng, pop_p)
            _sample(all_items, negatives - len(chosen), excluded, chosen, rng)
            rank_of = {c: r for r, c in enumerate(ranked)}
            cand = [target, *chosen]
            labels = np.zeros(len(cand), dtype=np.float32)
            labels[0] = 1.0
            ranks = np.array([rank_of.get(c, len(ranked)) for c in cand], dtype=np.int64)
            groups.append(Group(user, history, target, cand, labels, ranks))
    return groups


def _sample(
    pool: Sequence[str],
    n: int,
    excluded: set[str],
    chosen: list[str],
    rng: np.random.Generator,
    p: np.ndarray | None = None,
) -> None:
    """Append up to ``n`` items of ``pool`` (by ``p``, else uniform) not yet excluded; each chosen
    item is added to ``excluded``."""
    if n <= 0 or not len(pool):
        return
    if p is not None:
        order = rng.choice(len(pool), size=min(len(pool), 4 * n + 8), replace=False, p=p)
    else:
        order = rng.permutation(len(pool))
    got = 0
    for j in order:
        it = pool[int(j)]
        if it in excluded:
            continue
        chosen.append(it)
        excluded.add(it)
        got += 1
        if got == n:
            return


def serving_groups(
    examples: Sequence[tuple[str, list[str], str | None]],
    candidate_fn: CandidateFn,
    top: int,
    batch: int = 512,
) -> list[Group]:
    """The served candidate lists: ``candidate_fn``'s top ``top`` items in retrieval order.

    The target is labelled where retrieval found it and never inserted where it did not.
    """
    groups = []
    for chunk in _chunks(len(examples), batch):
        part = [examples[i] for i in chunk]
        cands = candidate_fn([h for _, h, _ in part], top)
        for (user, history, target), ranked in zip(part, cands):
            ranked = list(ranked[:top])
            labels = np.array([1.0 if c == target else 0.0 for c in ranked], dtype=np.float32)
            groups.append(
                Group(user, history, target, ranked, labels, np.arange(len(ranked), dtype=np.int64))
            )
    return groups


class PairTokenizer:
    """Token ids of (candidate, history) pairs within a budget, caching each item's tokens.

    Layout: ``[CLS] candidate [SEP] h_1 ; h_2 ; ... [SEP]`` with h_1 the most recent history item;
    the candidate is cut to ``candidate_tokens``, each history item to ``history_item_tokens``, and
    the history stops where the whole pair would exceed ``max_tokens``.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_tokens: int,
        candidate_tokens: int,
        history_item_tokens: int,
        history_items: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.candidate_tokens = candidate_tokens
        self.history_item_tokens = history_item_tokens
        self.history_items = history_items
        self.cls = tokenizer.cls_token_id
        self.sep = tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id or 0
        semi = tokenizer(";", add_special_tokens=False)["input_ids"]
        self.item_sep = (
            semi[0] if len(semi) == 1 and semi[0] != tokenizer.unk_token_id else self.sep
        )
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(
                text,
                add_special_tokens=False,
                truncation=True,
                max_length=max(self.candidate_tokens, self.history_item_tokens),
            )["input_ids"]
            if len(self._cache) < 200_000:
                self._cache[text] = ids
        return ids

    def pair_ids(
        self, history_texts: Sequence[str], candidate_text: str
    ) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of one pair; ``history_texts`` most recent first."""
        cand = self._ids(candidate_text)[: self.candidate_tokens]
        ids = [self.cls, *cand, self.sep]
        types = [0] * len(ids)
        budget = self.max_tokens - len(ids) - 1
        hist: list[int] = []
        for i, text in enumerate(history_texts[: self.history_items]):
            piece = self._ids(text)[: self.history_item_tokens]
            if i:
                piece = [self.item_sep, *piece]
            room = budget - len(hist)
            if room <= 0:
                break
            hist.extend(piece[:room])
        ids += [*hist, self.sep]
        types += [1] * (len(hist) + 1)
        return ids, types

    def encode(
        self, history_texts: Sequence[Sequence[str]], candidate_texts: Sequence[str]
    ) -> dict[str, Any]:
        """Padded torch tensors (input_ids, token_type_ids, attention_mask) for a batch of pairs."""
        import torch

        pairs = [self.pair_ids(h, c) for h, c in zip(history_texts, candidate_texts)]
        width = max(len(p[0]) for p in pairs)
        n = len(pairs)
        input_ids = torch.full((n, width), self.pad, dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, (ids, tt) in enumerate(pairs):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            types[i, : len(tt)] = torch.tensor(tt)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "token_type_ids": types, "attention_mask": mask}


def history_texts_of(history: Sequence[str], texts: dict[str, str], limit: int) -> list[str]:
    """Texts of the ``limit`` most recent history items, most recent first."""
    recent = list(history)[-limit:][::-1] if limit > 0 else []
    return [texts.get(i, i) for i in recent]
