"""The webhooks family: deliver-webhook (``webhooks:deliver``).

``handlers`` registers the job handler on ``tq.handlers.default_handlers``; ``signing`` signs deliveries
and lets a receiver verify them (``verify_signature``); ``delivery`` guards against SSRF and POSTs.
"""
