"""The app layer's composition of stages (the only place retrieval + index + ranking + eval meet).

One module per composition: ``index`` (build-index, retrieve), ``rank`` (rerank, recommend),
``evaluate`` (stage rankings -> eval), ``run`` (the one-command pipeline).
"""
