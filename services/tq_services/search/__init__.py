"""The search family: index-article (``search:index``) and the search helper behind ``tq search``.

``text`` turns an article body into plain text, ``index`` builds or removes an article's search
documents (one per locale: the article's own and each translation's), ``query`` ranks documents
for a query on SQLite (FTS5, bm25) or PostgreSQL (tsvector, ts_rank), and ``handlers`` registers
the job.
"""
