"""The ai family: ``ai:content`` (generate-draft, generate-summary, translate, enhance-content,
rewrite-section), ``ai:seo`` (generate-seo, generate-meta, suggest-keywords) and ``ai:review``
(review-article).

``llm`` talks to any OpenAI-compatible chat-completions API and classifies its failures;
``handlers`` registers the jobs; ``answers`` validates structured (JSON) answers; ``checks``
computes readability and structure without a model; ``seed`` holds the demo articles.
"""
