"""Cross-encoder reranking stage: (candidate text, history text) pairs -> calibrated click
probabilities.

``pairs`` builds time-safe labelled pairs, ``model`` holds the cross-encoder (``CrossEncoder``)
and the serving object (``Reranker.load(dir).predict(history_texts, candidate_texts)``),
``losses`` the pointwise / listwise losses, ``train`` the explicit training loop, ``calibrate``
the validation-fitted calibrators, ``metrics`` NDCG / AUC / log-loss / ECE.
"""
