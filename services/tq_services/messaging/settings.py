"""The messaging family's settings: SMTP for send-email and OTPs by email, the one-time codes of
send-otp, the SMS provider (``TQ_SMTP_*``, ``TQ_OTP_*``, ``TQ_SMS_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr
from tq.settings import TqSettings


class MessagingSettings(TqSettings):
    # SMTP: send-email and OTPs by email
    smtp_host: str = Field("127.0.0.1", description="the SMTP server for the messaging family")
    smtp_port: int = Field(25, ge=1, le=65535, description="the SMTP server's port")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "starttls",
        description="`none` (plain), `starttls` (required upgrade) or `tls` (implicit TLS, port 465)",
    )
    smtp_validate_certs: bool = Field(True, description="check the SMTP server's certificate")
    smtp_username: str | None = Field(None, description="SMTP user name")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (from a Secret in a cluster)")
    smtp_from: str = Field("no-reply@localhost", description="the sender address")
    smtp_timeout_s: PositiveFloat = Field(15.0, description="connect and per-command timeout")

    # one-time codes (send-otp)
    otp_length: int = Field(6, ge=4, le=12, description="digits in a one-time code")
    otp_ttl_s: PositiveInt = Field(300, description="how long a code is valid")
    otp_cooldown_s: int = Field(
        60, ge=0, description="a second code for the same user and purpose is refused this long"
    )
    otp_max_attempts: int = Field(5, ge=1, le=100, description="verification attempts per code")
    sms_provider_url: str | None = Field(
        None, description="SMS over HTTP: POST `{to, message}` as JSON with a bearer token; unset: no SMS"
    )
    sms_provider_token: SecretStr | None = Field(
        None, description="the SMS provider's bearer token (from a Secret in a cluster)"
    )
    sms_timeout_s: PositiveFloat = Field(10.0, description="SMS provider timeout")


@lru_cache(maxsize=1)
def get_messaging_settings() -> MessagingSettings:
    return MessagingSettings()
