"""The messages optflow writes itself, by template name: each is a packaged Jinja file under
message_templates/, may be overridden per org, and has a built-in last-resort text
(adapters/templates.py)."""

from __future__ import annotations

TEMPLATE_NAMES: tuple[str, ...] = (
    "customer/opt_in_request.employee_started",
    "customer/opt_in_request.customer_started",
    "customer/opt_in_confirmation",
    "customer/opt_out_confirmation",
    "customer/help",
    "customer/reauth_request",
    "customer/pin",
    "customer/disclaimer",
    "employee/opt_in_request_sent",
    "employee/contact_opted_in",
    "employee/contact_opted_out",
    "employee/pin_sent",
    "email/marketing_footer",
    # A conversation the customer started (Movius's "MT" case) has texts of its own.
    "customer/opt_in_confirmation.customer_started",
    "customer/opt_out_confirmation.customer_started",
    "employee/opt_in_request_sent.customer_started",
    "employee/contact_opted_in.customer_started",
    "employee/contact_opted_out.customer_started",
)
