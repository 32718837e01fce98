"""Which language optflow answers a customer in, and how it learns the customer's language.

Four languages are supported (`SUPPORTED_LANGUAGES`): English, Spanish, French and Portuguese,
the languages of US texting after English. The language of a reply is, in this order:

1. the language the customer just used: the language of the keyword or phrase their message
   matched ("ALTO" is Spanish, "AIDE" French), else what a small word-list detector finds in their
   words (`detect_language`);
2. the contact's language (set by an agent, or learned from an earlier message);
3. the org's default language (the `default_language` setting, `en` unless set).

The keywords that every language's texts show (`STOP`, `START`, `HELP`: the words carriers act
on, so the Spanish help text also says "Responda STOP") are no evidence of a language: a Spanish
speaker who replies STOP to a Spanish text is answered in Spanish when their contact says so.

Everything here is pure data and string work: no model, nothing downloaded, and each decision can
be explained by the words it saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .keywords import normalise
from .model import Channel

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "pt")
"""ISO 639-1 codes of the languages optflow answers in."""

DEFAULT_LANGUAGE = "en"

LANGUAGE_NAMES: Mapping[str, str] = MappingProxyType({
    "en": "English", "es": "Spanish", "fr": "French", "pt": "Portuguese"})
"""The English name of each supported language, for people choosing or reading one."""

NEUTRAL_KEYWORDS: frozenset[str] = frozenset({"stop", "start", "help"})
"""Keywords the texts of every language show (normalised): a customer using one says nothing
about their language."""


def supported_language(code: str | None) -> str | None:
    """The supported language a code names ('es', 'ES', 'pt-BR' -> 'pt'), or None."""
    if not code:
        return None
    if code in SUPPORTED_LANGUAGES:  # the stored and settings' form: every message and flow step asks
        return code
    primary = code.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in SUPPORTED_LANGUAGES else None


# Words that are frequent in short messages of one language and rare in the others, in their
# normalised form (lower case, no accents, no apostrophes: "não" -> "nao", "m'écrire" ->
# "mecrire"). Words two languages share ("no", "por favor", "mensajes"/"messages", "numero") are
# left out; so are the keywords themselves, which the classifier already reports.
MARKER_WORDS: Mapping[str, frozenset[str]] = MappingProxyType({
    "en": frozenset((
        "the", "you", "your", "please", "thanks", "thank", "is", "are", "this", "that", "these", "my", "i", "im",
        "dont", "not", "want", "with", "have", "will", "would", "just", "what", "who", "why", "how", "from", "any",
        "more", "texts", "texting", "messaging", "anymore", "again", "number", "phone", "call", "can", "could",
        "get", "off", "out", "tomorrow", "today", "see", "when", "ready"
    )),
    "es": frozenset((
        "el", "los", "las", "del", "por", "gracias", "quiero", "mi", "mis", "su", "sus", "es", "ya", "manden",
        "mandes", "envien", "escriban", "mensajes", "textos", "hola", "buenos", "buenas", "usted", "ustedes",
        "dejen", "deje", "quitenme", "sacame", "saquenme", "borrenme", "necesito", "ayudeme", "senor", "manana",
        "hora", "cita", "hoy"
    )),
    "fr": frozenset((
        "je", "jai", "ne", "pas", "plus", "merci", "vous", "moi", "des", "est", "et", "mon", "ma", "votre", "vos",
        "bonjour", "svp", "sil", "plait", "arretez", "arrete", "ecrire", "menvoyer", "mecrire", "envoyer", "veux",
        "voudrais", "besoin", "aidez", "oui", "non", "beaucoup", "demain", "aujourdhui", "rendez"
    )),
    "pt": frozenset((
        "nao", "voce", "voces", "obrigado", "obrigada", "meu", "minha", "meus", "isso", "estou", "parem", "mandem",
        "enviem", "tirem", "mensagens", "ola", "bom", "sim", "preciso", "ajudem", "com", "quero", "amanha", "ate",
        "hoje"
    )),
})
# The same word in two lists counts for neither: only what tells the languages apart is kept.
_OWNER: Mapping[str, str] = MappingProxyType({
    word: language
    for language, words in MARKER_WORDS.items()
    for word in words
    if sum(word in other for other in MARKER_WORDS.values()) == 1
})


SHORT_MESSAGE_WORDS = 6
"""Up to this many words, one word of a language is enough to tell it."""


def detect_language(text: str) -> str | None:
    """The language of a customer's message by its words, or None when they do not tell.

    Each word that belongs to one language's list (`MARKER_WORDS`, words of two lists count for
    neither) is a vote; the language with the most votes wins if it has strictly more than any
    other and at least two, or one in a short message (`SHORT_MESSAGE_WORDS` words at most:
    "gracias", "merci beaucoup, à demain"). So "ok" or "STOP" decide nothing, and a long message
    needs more than one word of its language."""
    words = normalise(text).split()
    votes: dict[str, int] = {}
    for word in words:
        language = _OWNER.get(word)
        if language is not None:
            votes[language] = votes.get(language, 0) + 1
    if not votes:
        return None
    ranked = sorted(votes.items(), key=lambda item: -item[1])
    best, count = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == count:
        return None
    return best if count >= 2 or len(words) <= SHORT_MESSAGE_WORDS else None


def spoken_language(matched_language: str | None, matched: str | None, text: str) -> str | None:
    """The language the customer used in one message: the language of the keyword or phrase it
    matched (unless that keyword, or the whole message, is one every language shows,
    `NEUTRAL_KEYWORDS`), else the one its words show (`detect_language`), else None."""
    neutral = normalise(matched or "") in NEUTRAL_KEYWORDS or normalise(text) in NEUTRAL_KEYWORDS
    if matched_language is not None and not neutral:
        language = supported_language(matched_language)
        if language is not None:
            return language
    return detect_language(text)


def reply_language(spoken: str | None, contact_language: str | None, org_default: str | None) -> str:
    """The language to answer in: the one just spoken, else the contact's, else the org's default,
    else English."""
    for candidate in (spoken, contact_language, org_default):
        language = supported_language(candidate)
        if language is not None:
            return language
    return DEFAULT_LANGUAGE


# ------------------------------------------------------------------------------ words in texts
# Values the templates show that optflow itself supplies, per language. An org's own settings
# (its program name, help contact, frequency notice) are shown as the org wrote them; only the
# defaults of those settings are given in the reply's language.

CHANNEL_WORDS: Mapping[str, Mapping[Channel, str]] = MappingProxyType({
    "en": {Channel.TEXT: "text", Channel.CALL: "call", Channel.EMAIL: "email", Channel.WHATSAPP: "whatsapp",
           Channel.CHAT: "chat"},
    "es": {Channel.TEXT: "SMS", Channel.CALL: "teléfono", Channel.EMAIL: "correo electrónico",
           Channel.WHATSAPP: "WhatsApp", Channel.CHAT: "chat"},
    "fr": {Channel.TEXT: "SMS", Channel.CALL: "téléphone", Channel.EMAIL: "e-mail", Channel.WHATSAPP: "WhatsApp",
           Channel.CHAT: "chat"},
    "pt": {Channel.TEXT: "SMS", Channel.CALL: "telefone", Channel.EMAIL: "e-mail", Channel.WHATSAPP: "WhatsApp",
           Channel.CHAT: "chat"},
})
"""How the texts of each language name a channel (English keeps the channel's own name)."""

YES_WORDS: Mapping[str, str] = MappingProxyType({"en": "YES", "es": "SI", "fr": "OUI", "pt": "SIM"})
"""The opt-in word each language's texts ask for; every one is an opt-in keyword of the default
table. STOP, START and HELP stay the same in every language (carriers act on them)."""

DEFAULT_SETTING_TEXTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "es": {"Msg frequency varies": "La frecuencia de los mensajes varía", "reply HELP": "responda HELP"},
    "fr": {"Msg frequency varies": "Fréquence des messages variable", "reply HELP": "répondez HELP"},
    "pt": {"Msg frequency varies": "A frequência das mensagens varia", "reply HELP": "responda HELP"},
})
"""The defaults of the `message_frequency` and `help_contact` settings in other languages: a
value the org left at its default is shown in the reply's language, a value it wrote as it is."""


HELP_BY_NUMBER = "call or text {}"
"""The HELP contact a new org is given (its own number in place of `{}`), until an admin words it."""

_HELP_BY_NUMBER_PREFIX = HELP_BY_NUMBER.format("")
HELP_BY_NUMBER_TEXTS: Mapping[str, str] = MappingProxyType({
    "es": "llame o escriba al {}", "fr": "appelez ou écrivez au {}", "pt": "ligue ou envie mensagem para {}",
})


def localised_setting(language: str, value: str) -> str:
    """`value` of a text setting as shown in `language`: translated if it is the setting's
    default, or the HELP contact a new org is given (`HELP_BY_NUMBER`); as written otherwise."""
    texts = DEFAULT_SETTING_TEXTS.get(language)
    if texts is None:  # English: the settings' own language
        return value
    translated = texts.get(value)
    if translated is not None:
        return translated
    number = value.removeprefix(_HELP_BY_NUMBER_PREFIX)
    if number is not value and number.startswith("+") and number[1:].isdigit():
        return HELP_BY_NUMBER_TEXTS[language].format(number)
    return value
