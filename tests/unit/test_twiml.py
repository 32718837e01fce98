"""optflow writes its TwiML answers itself; they must be exactly what the twilio library writes."""

from __future__ import annotations

import random

import pytest
from twilio.twiml.messaging_response import MessagingResponse

from optflow.entrypoints.webhooks import twiml_replies

ALPHABET = "abc XYZ 019 &<>\"' \n\t;=/é ß 中 🛑 ]]> <!-- -->"


def library_twiml(replies: list[str]) -> str:
    response = MessagingResponse()
    for text in replies:
        response.message(text)
    return str(response.to_xml())


@pytest.mark.parametrize("replies", [
    [], ["You are unsubscribed. Reply START to resubscribe."], ["a & b <c> \"q\" 's'", "second"],
    ["Tom & Jerry's <b>deal</b> ]]>"], [""],
])
def test_same_as_the_twilio_library(replies: list[str]) -> None:
    assert twiml_replies(replies) == library_twiml(replies)


def test_same_as_the_twilio_library_for_random_text() -> None:
    rng = random.Random(8058)
    for _ in range(300):
        replies = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(0, 3))]
        assert twiml_replies(replies) == library_twiml(replies), replies
