"""The wire: SMTP with aiosmtplib and an SMS provider over HTTP with httpx.

SMTP 5xx (and a server that cannot do what the settings require) -> ``DeliveryRejected``;
SMTP 4xx, connection errors and timeouts -> ``DeliveryDeferred``. The SMS provider gets
``POST {"to", "message"}`` as JSON with a bearer token; 2xx is accepted, 408/429/5xx, timeouts
and connection errors are deferred, any other answer (4xx, redirects, which are not followed) is
a rejection.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
import httpx
from tq import tracing

from tq_services.messaging.errors import DeliveryDeferred, DeliveryRejected
from tq_services.messaging.render import Rendered
from tq_services.messaging.settings import MessagingSettings

EXCERPT = 300
EXCEPTION_MAX = 1000


def build_message(settings: MessagingSettings, to: str, rendered: Rendered) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2].strip("> ") or None)
    msg["Content-Language"] = rendered.locale
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def _smtp_failure(code: int, message: str, what: str) -> Exception:
    text = f"SMTP {code} {what}: {message}"[:EXCEPTION_MAX]
    if 400 <= code < 500:
        return DeliveryDeferred(text)
    return DeliveryRejected(text)


async def send_smtp(settings: MessagingSettings, to: str, rendered: Rendered) -> str:
    """Send one message; returns the text of the server's final 250 answer."""
    msg = build_message(settings, to, rendered)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    span = tracing.client_span(  # no instrumentation covers aiosmtplib: a span of our own
        "smtp send",
        {
            "server.address": settings.smtp_host,
            "server.port": settings.smtp_port,
            "tq.smtp.tls": settings.smtp_tls,
        },
    )
    try:
        with span:
            _, response = await aiosmtplib.send(
                msg,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                use_tls=settings.smtp_tls == "tls",
                start_tls=settings.smtp_tls == "starttls",
                validate_certs=settings.smtp_validate_certs,
                timeout=settings.smtp_timeout_s,
            )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        # one recipient per message: its refusal decides
        worst = max(exc.recipients, key=lambda r: r.code)
        raise _smtp_failure(worst.code, worst.message, f"refused {worst.recipient}") from None
    except aiosmtplib.SMTPResponseException as exc:
        raise _smtp_failure(exc.code, exc.message, type(exc).__name__) from None
    except aiosmtplib.SMTPNotSupported as exc:
        raise DeliveryRejected(f"SMTP server at {settings.smtp_host}: {exc}") from None
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        where = f"{settings.smtp_host}:{settings.smtp_port}"
        raise DeliveryDeferred(f"SMTP server at {where}: {type(exc).__name__}: {exc}") from None
    return response


async def send_sms(settings: MessagingSettings, to: str, message: str, *, secret: str = "") -> str:
    """POST one text message to the provider; returns ``<status> <body excerpt>``.

    ``secret`` (the code) is blanked out of every excerpt that goes into logs or errors.
    """
    if not settings.sms_provider_url:
        raise DeliveryRejected("no SMS provider configured (TQ_SMS_PROVIDER_URL)")
    headers = {}
    if settings.sms_provider_token is not None:
        headers["Authorization"] = f"Bearer {settings.sms_provider_token.get_secret_value()}"

    def excerpt(body: str) -> str:
        body = body[:EXCERPT]
        return body.replace(secret, "******") if secret else body

    try:
        async with httpx.AsyncClient(timeout=settings.sms_timeout_s, follow_redirects=False) as client:
            r = await client.post(
                settings.sms_provider_url, json={"to": to, "message": message}, headers=headers
            )
    except httpx.HTTPError as exc:
        raise DeliveryDeferred(f"SMS provider unreachable: {type(exc).__name__}") from None
    answer = f"{r.status_code} {excerpt(r.text)}".strip()
    if r.is_success:
        return answer
    if r.status_code in (408, 429) or r.status_code >= 500:
        raise DeliveryDeferred(f"SMS provider answered {answer}")
    raise DeliveryRejected(f"SMS provider answered {answer}")
