"""The messaging family: send-email and process-email-queue (``email:send``), send-otp (``otp:send``).

``handlers`` registers the job handlers on ``tq.handlers.default_handlers``; ``render`` renders the
per-locale Jinja2 templates in ``templates/``; ``delivery`` talks SMTP and the SMS provider;
``otp`` hashes and verifies one-time codes.
"""
