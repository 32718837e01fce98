"""The form handed to the twilio library's signature check gives it every value of every field,
repeated and empty ones included, exactly as the library reads Sanic's own form."""

from __future__ import annotations

from sanic.request import RequestParameters
from twilio.request_validator import RequestValidator

from optflow.entrypoints.webhooks import _AllValues


def test_signs_the_same_as_the_raw_form() -> None:
    form = RequestParameters({"Body": ["Tom & Jerry <3"], "From": ["+14155550100"], "MediaUrl": ["b", "a"],
                              "OptOutType": [""], "To": ["+12025550123"]})
    validator = RequestValidator("auth-token")
    url = "https://sms.example.com/webhooks/twilio/sms?x=1"
    assert validator.compute_signature(url, _AllValues(form)) == validator.compute_signature(url, form)
    assert _AllValues(form).getall("MediaUrl") == ["b", "a"]
    assert validator.validate(url, _AllValues(form), validator.compute_signature(url, form))
