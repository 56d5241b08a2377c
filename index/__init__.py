"""Vector index stage: FAISS over item vectors (index.vector_index.VectorIndex) and the exact
top-k oracle (index.exact). numpy + lazily imported faiss; never imports torch."""
